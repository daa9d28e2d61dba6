"""The warm pool on in-process stand-ins for bot processes (tests/pool_fakes.py): it fills to
its target, hands out idle bots, stops at its cap, drains, and heals after a bot dies, falls
silent, never becomes ready or cannot be limited."""

from __future__ import annotations

import asyncio
import signal

import pytest

from bots.protocol import Hangup
from spawner.bot_handle import BotState
from spawner.config import SpawnerConfig
from spawner.pool import NoCapacity
from tests.pool_fakes import Behavior, FakeZygote, RecordingLimiter, Spawner, running, until

SIGKILLED = -signal.SIGKILL


async def _settled(spawner: Spawner) -> None:
    """Wake the pool's maintainer and let it act on what it sees."""
    await spawner.pool.notify()
    await asyncio.sleep(0.05)


async def test_the_pool_fills_to_its_floor_and_no_further() -> None:
    async with running(SpawnerConfig(min_idle=2, max_bots=4), wait_idle=2) as spawner:
        await _settled(spawner)
        assert len(spawner.zygote.bots) == 2
        pids = sorted(spawner.pool.bots)
        assert sorted(spawner.limiter.applied) == pids  # each bot limited as it started
        assert len(spawner.spawned) == 2 and all(s >= 0 for s in spawner.spawned)
        status = spawner.pool.status()
        assert (status["idle"], status["busy"], status["starting"]) == (2, 0, 0)
    # Closing the pool kills every bot.
    assert all(bot.process.exitcode == SIGKILLED for bot in spawner.zygote.bots)
    assert spawner.pool.bots == {}


async def test_a_call_takes_an_idle_bot_and_the_pool_refills_behind_it() -> None:
    async with running(SpawnerConfig(min_idle=2, max_bots=4), wait_idle=2) as spawner:
        first_two = set(spawner.pool.bots)
        bot = await spawner.pool.acquire()
        assert bot.pid in first_two and bot.state is BotState.BUSY
        assert spawner.limiter.engaged == [bot.pid]  # a call's CPU weight
        await until(lambda: spawner.idle() == 2, "a third bot warm")
        await _settled(spawner)
        assert len(spawner.zygote.bots) == 3
        assert spawner.pool.count(BotState.BUSY) == 1


async def test_busy_calls_raise_the_warm_target_up_to_the_cap() -> None:
    config = SpawnerConfig(min_idle=1, idle_share=0.5, refill_horizon=0.0, max_bots=6)
    async with running(config, wait_idle=1) as spawner:
        for _ in range(4):
            await spawner.pool.acquire()
        # Four calls want two warm bots beside them (idle_share 0.5): six, the cap.
        await until(lambda: spawner.idle() == 2, "two bots warm beside four calls")
        await _settled(spawner)
        assert len(spawner.zygote.bots) == 6
        assert spawner.pool.target_idle() == 2


async def test_a_full_pool_refuses_at_once_with_a_retry_after() -> None:
    config = SpawnerConfig(min_idle=2, max_bots=2, assign_wait=30.0)
    async with running(config, wait_idle=2) as spawner:
        await spawner.pool.acquire()
        await spawner.pool.acquire()
        # Refused, not queued for assign_wait: nothing is starting and the pool cannot grow.
        with pytest.raises(NoCapacity) as caught:
            await asyncio.wait_for(spawner.pool.acquire(), timeout=5.0)
        assert caught.value.retry_after == 2.0 and not caught.value.draining
        assert len(spawner.zygote.bots) == 2


async def test_an_offer_waits_for_a_bot_that_is_starting() -> None:
    zygote = FakeZygote(Behavior(ready_after=0.1))
    async with running(SpawnerConfig(min_idle=1, max_bots=1), zygote) as spawner:
        assert spawner.idle() == 0
        bot = await spawner.pool.acquire()
        assert bot.state is BotState.BUSY and bot.pid == zygote.bots[0].pid


async def test_an_offer_waits_no_longer_than_assign_wait() -> None:
    zygote = FakeZygote(Behavior(ready_after=None))
    config = SpawnerConfig(min_idle=1, max_bots=1, assign_wait=0.1)
    async with running(config, zygote) as spawner:
        with pytest.raises(NoCapacity) as caught:
            await spawner.pool.acquire()
        assert caught.value.retry_after == 2.0 and not caught.value.draining


async def test_draining_retires_idle_bots_keeps_calls_and_refuses_offers() -> None:
    async with running(SpawnerConfig(min_idle=2, max_bots=4), wait_idle=2) as spawner:
        busy = await spawner.pool.acquire()
        await until(lambda: spawner.idle() == 2, "the refill")
        idle = [b for b in spawner.zygote.bots if b.pid != busy.pid]
        await spawner.pool.retire_idle()
        # Not even a retiring bot that has yet to exit is handed out.
        with pytest.raises(NoCapacity) as caught:
            await spawner.pool.acquire()
        assert caught.value.draining and caught.value.retry_after == 5.0
        await until(lambda: not any(b.alive for b in idle), "idle bots gone")
        assert all(b.received == [Hangup(reason="retired")] for b in idle)
        assert all(b.process.exitcode == 0 for b in idle)  # they exited, not killed
        assert list(spawner.pool.bots) == [busy.pid] and spawner.fake(busy).alive
        with pytest.raises(NoCapacity) as caught:
            await spawner.pool.acquire()
        assert caught.value.draining
        await _settled(spawner)
        assert spawner.pool.target_idle() == 0
        assert len(spawner.zygote.bots) == 3  # no refill while draining


@pytest.mark.parametrize("state", [BotState.IDLE, BotState.BUSY])
async def test_a_bot_that_dies_is_forgotten_and_replaced(state: BotState) -> None:
    async with running(SpawnerConfig(min_idle=2, max_bots=4), wait_idle=2) as spawner:
        if state is BotState.BUSY:
            await spawner.pool.acquire()
            await until(lambda: spawner.idle() == 2, "the refill")
        victim = next(b for b in spawner.pool.bots.values() if b.state is state)
        spawned = len(spawner.zygote.bots)
        spawner.fake(victim).exit(1)
        await until(lambda: victim.pid not in spawner.pool.bots, "the dead bot forgotten")
        assert victim.state is BotState.EXITED and victim.exit_code == 1
        assert victim.pid in spawner.limiter.released  # its cgroup removed
        await until(lambda: spawner.idle() == 2, "the pool healed")
        # An idle bot's death leaves a gap to fill; a busy one's took no warm bot with it.
        assert len(spawner.zygote.bots) == spawned + (1 if state is BotState.IDLE else 0)


async def test_a_silent_bot_is_killed_as_hung_and_replaced() -> None:
    zygote = FakeZygote(Behavior(heartbeat=0.02))
    config = SpawnerConfig(min_idle=2, max_bots=4, heartbeat_timeout=0.5)
    async with running(config, zygote, wait_idle=2) as spawner:
        victim, healthy = spawner.pool.bots.values()
        spawner.fake(victim).stop_heartbeats()
        await until(lambda: victim.state is BotState.EXITED, "the silent bot killed")
        assert victim.hung and victim.exit_code == SIGKILLED
        assert not healthy.hung and healthy.state is BotState.IDLE
        await until(lambda: spawner.idle() == 2, "a replacement warm")


async def test_a_bot_that_never_becomes_ready_is_killed_and_replaced() -> None:
    zygote = FakeZygote(Behavior(ready_after=None))
    config = SpawnerConfig(min_idle=1, max_bots=1, heartbeat_timeout=0.2)
    async with running(config, zygote) as spawner:
        await until(lambda: len(zygote.bots) >= 2, "a second try")
        first = zygote.bots[0]
        assert first.process.exitcode == SIGKILLED
        assert spawner.idle() == 0


async def test_a_spawn_failure_is_counted_and_not_retried_at_once() -> None:
    zygote = FakeZygote(failures=1)
    async with running(SpawnerConfig(min_idle=1, max_bots=1), zygote) as spawner:
        await until(lambda: spawner.pool.spawn_failures == 1, "the failure counted")
        await _settled(spawner)
        # A broken fork server is not hammered: the failed start holds its slot a while.
        assert zygote.attempts == 1
        assert spawner.pool.starting == 1 and spawner.pool.bots == {}


async def test_a_bot_that_cannot_be_limited_is_killed_before_it_takes_a_call() -> None:
    limiter = RecordingLimiter(fail_apply=1)
    config = SpawnerConfig(min_idle=1, max_bots=2, assign_wait=0.1)
    async with running(config, limiter=limiter) as spawner:
        await until(lambda: spawner.pool.spawn_failures == 1, "the failure counted")
        (unlimited,) = spawner.zygote.bots
        await until(lambda: not unlimited.alive, "the unlimited bot killed")
        assert unlimited.process.exitcode == SIGKILLED
        await until(lambda: unlimited.pid in limiter.released, "its exit handled")
        assert unlimited.pid not in spawner.pool.bots
        assert limiter.engaged == []
