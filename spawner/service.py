"""The spawner process: zygote, warm pool, call manager and control API, with drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
import uvloop
from loguru import logger

from bots.bot_file import describe
from spawner.calls import CallManager
from spawner.config import SpawnerConfig
from spawner.control import build_control_app
from spawner.limits import Enforcement, make_limiter
from spawner.metrics import SpawnerMetrics
from spawner.pool import Pool
from spawner.recorder import Recorder
from spawner.spool import Spool
from spawner.zygote import Zygote

__all__ = ["Spawner", "run_spawner"]


class _ControlServer(uvicorn.Server):
    # Signals belong to the spawner, which drains calls before the server stops.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Spawner:
    def __init__(self, config: SpawnerConfig) -> None:
        self._config = config
        self._signals = 0
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()

    def _on_signal(self, signum: int) -> None:
        # Only flags here; the main coroutine acts on them.
        self._signals += 1
        logger.info(f"received {signal.Signals(signum).name} ({self._signals})")
        self._stop.set()
        if self._signals > 1:
            self._hurry.set()

    async def run(self) -> None:
        config = self._config
        logger.info(f"bot file: {describe(config.bot.bot)}")
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

        # Fail now, not in every bot, if the ICE bind address does not resolve here, if an
        # upstream library is not one voicebots supports, or if the bot file is broken (the
        # zygote checks these two before it forks).
        config.bot.media.resolve_bind_host()
        zygote = Zygote(config.bot)
        await zygote.start()
        limiter = make_limiter(config.limits)
        if limiter.enforcement in (Enforcement.RLIMIT, Enforcement.NONE):
            logger.warning(limiter.describe())
        else:
            logger.info(limiter.describe())
        recorder = Recorder(config.redis_url, Spool(config.spool_dir), config.spool_retry)
        recorder.start()
        calls: CallManager
        metrics = SpawnerMetrics(
            lambda: {
                **pool.status(),
                "active_calls": len(calls.live_calls()),
                "spooled": recorder.backlog,
            }
        )
        pool = Pool(
            config,
            zygote,
            limiter,
            on_event=lambda bot, message: calls.on_bot_event(bot, message),
            on_exit=lambda bot: calls.on_bot_exit(bot),
            on_spawned=metrics.spawn_seconds.observe,
        )
        calls = CallManager(config, pool, recorder, metrics)
        pool.start()
        calls.start()
        server = _ControlServer(
            uvicorn.Config(
                build_control_app(calls, pool, metrics),
                host=config.host,
                port=config.port,
                log_level="warning",
                http="httptools",
                lifespan="off",
            )
        )
        serving = asyncio.create_task(server.serve(), name="control-api")
        logger.info(f"spawner control API on http://{config.host}:{config.port}")
        try:
            await self._stop.wait()
            await self._drain(pool, calls)
        finally:
            server.should_exit = True
            await asyncio.gather(serving, return_exceptions=True)
            await pool.close()
            await calls.close()
            await recorder.close()
            limiter.close()
            logger.info("spawner stopped")

    async def _drain(self, pool: Pool, calls: CallManager) -> None:
        """Stop taking calls, let live ones finish (up to the drain timeout), then end them."""
        await pool.retire_idle()
        live = calls.live_calls()
        logger.info(f"draining: {len(live)} live calls, up to {self._config.drain_timeout} s")
        if live:
            waiting: asyncio.Future[Any] = asyncio.gather(*(s.ended.wait() for s in live))
            hurry: asyncio.Future[Any] = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait(
                {waiting, hurry},
                timeout=self._config.drain_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            hurry.cancel()
            waiting.cancel()
            await asyncio.gather(waiting, hurry, return_exceptions=True)
        remaining = calls.live_calls()
        if remaining:
            logger.info(f"ending {len(remaining)} calls")
            await asyncio.gather(
                *(calls.hangup(s.session_id, "shutdown") for s in remaining), return_exceptions=True
            )


def run_spawner(config: SpawnerConfig) -> None:
    uvloop.run(Spawner(config).run())
