"""The pool's warm target (floor, share of active calls, recent arrival rate) and refill timing."""

from __future__ import annotations

import asyncio
import time

import pytest

from bots.config import BotConfig
from spawner import pool as pool_module
from spawner.bot_handle import BotState
from spawner.config import SpawnerConfig
from spawner.limits import Limiter, LimitsConfig
from spawner.pool import REFILL_DEFER, SLOT_LEASE, Pool
from spawner.zygote import Zygote


async def _ignore(*_args: object) -> None:
    return None


def _pool(**settings: float) -> Pool:
    config = SpawnerConfig(**settings)  # type: ignore[arg-type]
    return Pool(config, Zygote(BotConfig()), Limiter(LimitsConfig()), _ignore, _ignore)


async def test_target_follows_the_arrival_rate() -> None:
    pool = _pool(min_idle=1, max_bots=20, refill_horizon=5.0)
    assert pool.target_idle() == 1
    # 30 calls in the last 30 s is 1 call/s: 5 s of calls should be warm.
    now = time.monotonic()
    pool._arrivals.extend(now - i for i in range(30))
    assert pool.arrival_rate() == 1.0
    assert pool.target_idle() == 5


async def test_target_never_exceeds_the_cap_and_is_zero_when_draining() -> None:
    pool = _pool(min_idle=3, max_bots=4, refill_horizon=60.0)
    pool._arrivals.extend([time.monotonic()] * 100)
    assert pool.target_idle() == 4
    pool.accepting = False
    assert pool.target_idle() == 0


async def test_old_arrivals_age_out() -> None:
    pool = _pool(min_idle=0, max_bots=8)
    pool._arrivals.append(time.monotonic() - 120)
    assert pool.arrival_rate() == 0.0
    assert pool.target_idle() == 0


class _Bot:
    def __init__(self, pid: int, state: BotState) -> None:
        self.pid = pid
        self.state = state


async def test_refill_waits_for_answers_in_flight_but_not_for_long() -> None:
    pool = _pool(min_idle=2, max_bots=8)
    idle, answering = _Bot(1, BotState.IDLE), _Bot(2, BotState.BUSY)
    pool.bots = {1: idle, 2: answering}  # type: ignore[dict-item]
    assert not pool._refill_deferred()
    async with pool.answering(answering):  # type: ignore[arg-type]
        assert pool._refill_deferred()
        pool._burst_began -= REFILL_DEFER  # a burst longer than the deferral allows
        assert not pool._refill_deferred()


async def test_refill_waits_a_moment_after_the_last_answer_for_the_next_offer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A quiet spell longer than any pause of a loaded machine between two lines of this test.
    monkeypatch.setattr(pool_module, "REFILL_QUIET", 30.0)
    monkeypatch.setattr(pool_module, "REFILL_DEFER", 60.0)
    pool = _pool(min_idle=2, max_bots=8)
    first, second = _Bot(1, BotState.BUSY), _Bot(2, BotState.BUSY)
    async with pool.answering(first):  # type: ignore[arg-type]
        pass
    assert pool._refill_deferred()  # another offer of the burst may be on its way
    began = pool._burst_began
    async with pool.answering(second):  # type: ignore[arg-type]
        assert pool._burst_began == began  # the same burst: its deferral is not extended
    pool._answered_at -= 30.0
    assert not pool._refill_deferred()


async def test_refill_waits_when_the_burst_took_the_last_idle_bot() -> None:
    pool = _pool(min_idle=2, max_bots=8)
    answering = _Bot(2, BotState.BUSY)
    pool.bots = {2: answering}  # type: ignore[dict-item]
    async with pool.answering(answering):  # type: ignore[arg-type]
        assert pool._refill_deferred()


async def test_refill_is_not_deferred_when_a_call_waits_for_a_bot() -> None:
    pool = _pool(min_idle=0, max_bots=2, assign_wait=5.0)
    answering = _Bot(2, BotState.BUSY)
    pool.bots = {2: answering}  # type: ignore[dict-item]
    async with pool.answering(answering):  # type: ignore[arg-type]
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)  # it finds no idle bot and waits
        assert pool._waiting == 1
        assert not pool._refill_deferred()
        pool.bots[1] = _Bot(1, BotState.IDLE)  # type: ignore[assignment]
        await pool.notify()
        assert (await waiter).pid == 1
    assert pool._waiting == 0


class _AnsweredBot(_Bot):
    """A bot in a call, recording what the pool sends it."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid, BotState.BUSY)
        self.sent: list[dict[str, object]] = []

    async def send(self, message: dict[str, object]) -> None:
        self.sent.append(message)


async def _answer(pool: Pool, bot: _AnsweredBot, order: list[str], hold: float) -> None:
    async with pool.answering(bot):  # type: ignore[arg-type]
        order.append(f"{bot.pid} answers")
        await asyncio.sleep(hold)
        order.append(f"{bot.pid} answered")


async def test_offers_are_answered_one_slot_at_a_time_in_arrival_order() -> None:
    pool = _pool(min_idle=0, max_bots=4, answer_concurrency=1)
    order: list[str] = []
    await asyncio.gather(*(_answer(pool, _AnsweredBot(pid), order, 0.005) for pid in (1, 2, 3)))
    assert order == [f"{pid} {step}" for pid in (1, 2, 3) for step in ("answers", "answered")]


async def test_an_answer_that_waits_lends_its_slot_after_the_lease() -> None:
    pool = _pool(min_idle=0, max_bots=4, answer_concurrency=1)
    order: list[str] = []
    slow = asyncio.create_task(_answer(pool, _AnsweredBot(1), order, SLOT_LEASE * 10))
    await asyncio.sleep(0)
    await _answer(pool, _AnsweredBot(2), order, 0)
    assert order == ["1 answers", "2 answers", "2 answered"]  # not behind the slow one
    await slow


async def test_without_a_limit_every_offer_is_answered_at_once() -> None:
    pool = _pool(min_idle=0, max_bots=4, answer_concurrency=0)
    order: list[str] = []
    await asyncio.gather(*(_answer(pool, _AnsweredBot(pid), order, 0.005) for pid in (1, 2, 3)))
    assert order[:3] == ["1 answers", "2 answers", "3 answers"]


class _EngagingLimiter(Limiter):
    def __init__(self) -> None:
        super().__init__(LimitsConfig())
        self.engaged: list[int] = []

    def engage(self, pid: int) -> None:
        self.engaged.append(pid)


async def test_a_bot_taken_for_a_call_gets_a_calls_cpu_weight() -> None:
    limiter = _EngagingLimiter()
    pool = Pool(
        SpawnerConfig(min_idle=0, max_bots=4), Zygote(BotConfig()), limiter, _ignore, _ignore
    )
    pool.bots = {7: _Bot(7, BotState.IDLE), 8: _Bot(8, BotState.IDLE)}  # type: ignore[dict-item]
    bot = await pool.acquire()
    assert bot.pid == 7 and bot.state is BotState.BUSY
    assert limiter.engaged == [7]  # bot 8, still idle, keeps the spare weight
