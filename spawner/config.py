"""Spawner settings, read once from the environment at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bots.config import BotConfig
from common.env import Environ, env_float, env_int, env_str
from spawner.limits import LimitsConfig

__all__ = ["SpawnerConfig", "usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class SpawnerConfig:
    #: The internal control API that signaling calls; never expose it publicly.
    host: str = "127.0.0.1"
    port: int = 7861
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Warm bots kept ready beyond those in calls.
    min_idle: int = 2
    #: Extra warm bots as a share of active calls (0.25: one more per four calls).
    idle_share: float = 0.25
    #: Bots (warm + in calls) never exceed this.
    max_bots: int = 8
    #: Keep warm the calls expected within this many seconds at the recent arrival rate.
    refill_horizon: float = 5.0
    #: A bot silent for this long (no heartbeat) is killed and replaced.
    heartbeat_timeout: float = 10.0
    #: How long an offer may wait for a bot that is still starting.
    assign_wait: float = 5.0
    #: How long a bot may take to answer an offer.
    answer_timeout: float = 10.0
    #: Offers answered at once (default: the CPUs the spawner may use); the others wait in
    #: arrival order, each at most ``spawner.pool.SLOT_LEASE`` behind an offer (0: no limit).
    answer_concurrency: int = field(default_factory=usable_cpus)
    #: A session from ``POST /start`` that gets no offer in this time is forgotten.
    start_ttl: float = 120.0
    #: How long live calls may go on after SIGTERM before they are ended.
    drain_timeout: float = 300.0
    #: Records that could not reach Redis wait here (and live calls are journaled here).
    spool_dir: str = str(Path.home() / ".local" / "state" / "voicebots" / "spool")
    #: Seconds between attempts to deliver spooled records.
    spool_retry: float = 2.0
    #: Live calls one API key (signaling's opaque owner id of it) may have at once; 0: any.
    max_calls_per_key: int = 0
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    bot: BotConfig = field(default_factory=BotConfig)

    def __post_init__(self) -> None:
        if self.min_idle > self.max_bots:
            raise ValueError(
                f"VOICEBOTS_MIN_IDLE ({self.min_idle}) must not exceed "
                f"VOICEBOTS_MAX_BOTS ({self.max_bots})"
            )

    @classmethod
    def from_env(cls, environ: Environ) -> SpawnerConfig:
        return cls(
            host=env_str(environ, "VOICEBOTS_SPAWNER_HOST", cls.host),
            port=env_int(environ, "VOICEBOTS_SPAWNER_PORT", cls.port, minimum=0),
            redis_url=env_str(environ, "REDIS_URL", cls.redis_url),
            min_idle=env_int(environ, "VOICEBOTS_MIN_IDLE", cls.min_idle, minimum=0),
            idle_share=env_float(environ, "VOICEBOTS_IDLE_SHARE", cls.idle_share),
            max_bots=env_int(environ, "VOICEBOTS_MAX_BOTS", cls.max_bots, minimum=1),
            refill_horizon=env_float(environ, "VOICEBOTS_REFILL_HORIZON", cls.refill_horizon),
            heartbeat_timeout=env_float(
                environ, "VOICEBOTS_HEARTBEAT_TIMEOUT", cls.heartbeat_timeout, minimum=0.1
            ),
            assign_wait=env_float(environ, "VOICEBOTS_ASSIGN_WAIT", cls.assign_wait),
            answer_timeout=env_float(
                environ, "VOICEBOTS_ANSWER_TIMEOUT", cls.answer_timeout, minimum=0.1
            ),
            answer_concurrency=env_int(
                environ, "VOICEBOTS_ANSWER_CONCURRENCY", usable_cpus(), minimum=0
            ),
            start_ttl=env_float(environ, "VOICEBOTS_START_TTL", cls.start_ttl, minimum=1.0),
            drain_timeout=env_float(environ, "VOICEBOTS_DRAIN_TIMEOUT", cls.drain_timeout),
            spool_dir=env_str(environ, "VOICEBOTS_SPOOL_DIR", cls.spool_dir),
            spool_retry=env_float(environ, "VOICEBOTS_SPOOL_RETRY", cls.spool_retry, minimum=0.05),
            max_calls_per_key=env_int(
                environ, "VOICEBOTS_MAX_CALLS_PER_KEY", cls.max_calls_per_key, minimum=0
            ),
            limits=LimitsConfig.from_env(environ),
            bot=BotConfig.from_env(environ),
        )
