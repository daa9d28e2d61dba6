"""Spawner settings, read once from the environment at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bots.config import HEARTBEAT_INTERVAL, BotConfig
from common.env import Environ
from common.settings import (
    DRAIN_TIMEOUT,
    MAX_BOTS,
    MAX_CALLS_PER_KEY,
    MIN_IDLE,
    REDIS_URL,
    SPAWNER_HOST,
    SPAWNER_URL,
    SPOOL_DIR,
)
from spawner.limits import LimitsConfig

__all__ = ["SpawnerConfig", "usable_cpus"]

#: Extra warm bots as a share of active calls (0.25: one more per four calls).
IDLE_SHARE = 0.25
#: Keep warm the calls expected within this many seconds at the recent arrival rate.
REFILL_HORIZON = 5.0
#: A bot silent for this long (ten missed heartbeats) is killed and replaced; a new bot
#: that is not ready by then, too.
HEARTBEAT_TIMEOUT = 10 * HEARTBEAT_INTERVAL
#: How long an offer may wait for a bot that is still starting.
ASSIGN_WAIT = 5.0
#: How long a bot may take to answer an offer.
ANSWER_TIMEOUT = 10.0
#: A session from ``POST /start`` that gets no offer in this time is forgotten.
START_TTL = 120.0
#: Seconds between attempts to deliver spooled records.
SPOOL_RETRY = 2.0


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return 443 if parts.scheme == "https" else 80


@dataclass(frozen=True)
class SpawnerConfig:
    """Settings of one node's spawner.

    Fields without a setting are fixed for users; tests build the config with other values.
    """

    #: The internal control API that signaling calls; never expose it publicly.
    host: str = SPAWNER_HOST.default
    port: int = _port_of(SPAWNER_URL.default)
    redis_url: str = REDIS_URL.default
    #: Warm bots kept ready beyond those in calls.
    min_idle: int = MIN_IDLE.default
    idle_share: float = IDLE_SHARE
    #: Bots (warm + in calls) never exceed this.
    max_bots: int = MAX_BOTS.default
    refill_horizon: float = REFILL_HORIZON
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    assign_wait: float = ASSIGN_WAIT
    answer_timeout: float = ANSWER_TIMEOUT
    #: Offers answered at once (default: the CPUs the spawner may use); the others wait in
    #: arrival order, each at most ``spawner.pool.SLOT_LEASE`` behind an offer (0: no limit).
    answer_concurrency: int = field(default_factory=usable_cpus)
    start_ttl: float = START_TTL
    #: How long live calls may go on after SIGTERM before they are ended.
    drain_timeout: float = DRAIN_TIMEOUT.default
    #: Records that could not reach Redis wait here (and live calls are journaled here).
    spool_dir: str = SPOOL_DIR.default
    spool_retry: float = SPOOL_RETRY
    #: Live calls one API key (signaling's opaque owner id of it) may have at once; 0: any.
    max_calls_per_key: int = MAX_CALLS_PER_KEY.default
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    bot: BotConfig = field(default_factory=BotConfig)

    def __post_init__(self) -> None:
        if self.min_idle > self.max_bots:
            raise ValueError(
                f"{MIN_IDLE.name} ({self.min_idle}) must not exceed "
                f"{MAX_BOTS.name} ({self.max_bots})"
            )

    @classmethod
    def from_env(cls, environ: Environ) -> SpawnerConfig:
        return cls(
            host=SPAWNER_HOST.read(environ),
            port=_port_of(SPAWNER_URL.read(environ)),
            redis_url=REDIS_URL.read(environ),
            min_idle=MIN_IDLE.read(environ),
            max_bots=MAX_BOTS.read(environ),
            drain_timeout=DRAIN_TIMEOUT.read(environ),
            spool_dir=SPOOL_DIR.read(environ),
            max_calls_per_key=MAX_CALLS_PER_KEY.read(environ),
            limits=LimitsConfig.from_env(environ),
            bot=BotConfig.from_env(environ),
        )
