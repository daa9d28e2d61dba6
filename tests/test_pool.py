"""The pool's warm target (floor, share of active calls, recent arrival rate) and refill timing."""

from __future__ import annotations

import time

from bots.config import BotConfig
from spawner.bot_handle import BotState
from spawner.config import SpawnerConfig
from spawner.limits import Limiter, LimitsConfig
from spawner.pool import REFILL_DEFER, Pool
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
        pool._answering[2] -= REFILL_DEFER  # an answer slower than the deferral allows
        assert not pool._refill_deferred()
    assert not pool._refill_deferred()


async def test_refill_is_not_deferred_when_no_bot_is_idle() -> None:
    pool = _pool(min_idle=2, max_bots=8)
    answering = _Bot(2, BotState.BUSY)
    pool.bots = {2: answering}  # type: ignore[dict-item]
    async with pool.answering(answering):  # type: ignore[arg-type]
        assert not pool._refill_deferred()
