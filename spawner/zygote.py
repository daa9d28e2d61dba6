"""Starts bot processes by forking them from a preloaded zygote.

The zygote is multiprocessing's fork server, told to import :mod:`bots.preload` (pipecat,
aiortc, onnxruntime, the providers) once. Each bot is then a fork of it: it starts with all of
that already in memory, shared copy-on-write, instead of importing it all again. The
socketpair end handed to a bot travels to the zygote as a file descriptor (SCM_RIGHTS).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.context
import os
import socket
import sys
import time

from loguru import logger

from bots.bot_file import BOT_ENV, BotFileError, describe
from bots.compat import check_upstream
from bots.config import BotConfig
from bots.process import bot_main

__all__ = ["Zygote"]


class Zygote:
    def __init__(self, config: BotConfig) -> None:
        self._config = config
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["bots.preload"])

    async def check_bot_file(self) -> None:
        """Import the bot file in a fresh interpreter: a broken one stops the spawner at
        start-up, with a message naming the file, and its imports stay out of this process.
        Raises :class:`~bots.bot_file.BotFileError`."""
        checker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots.bot_file",
            self._config.bot,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await checker.communicate()
        if checker.returncode != 0:
            text = stderr.decode(errors="replace").strip()
            raise BotFileError(text or f"bot file {describe(self._config.bot)} cannot run")

    async def start(self) -> None:
        """Check the upstream libraries and the bot file, then start the fork server and wait
        for its preload (the slow part, done once).

        Raises ``ValueError`` when an upstream library is not one voicebots supports or moved
        an internal voicebots reaches (:mod:`bots.compat`): no bot is forked.
        """
        started = time.monotonic()
        check_upstream()
        await self.check_bot_file()
        # The fork server inherits this environment: it names the bot file to bots.preload.
        os.environ[BOT_ENV] = self._config.bot
        process, sock = await self.spawn()
        # The first fork proves the zygote works; that bot is retired at once.
        sock.close()
        await asyncio.to_thread(process.join, 30)
        logger.info(f"zygote ready in {time.monotonic() - started:.2f} s")

    async def spawn(self) -> tuple[multiprocessing.process.BaseProcess, socket.socket]:
        """Fork one bot; returns its process and the spawner's end of its socketpair."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = self._context.Process(
            target=bot_main, args=(theirs, self._config), name="voicebots-bot", daemon=False
        )
        try:
            # start() talks to the fork server over a blocking socket; keep it off the loop.
            await asyncio.to_thread(process.start)
        finally:
            theirs.close()
        return process, ours
