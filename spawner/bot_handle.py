"""The spawner's side of one bot process: its socket, its state, its requests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from multiprocessing.process import BaseProcess

from loguru import logger

from bots.protocol import Channel, Error, Heartbeat, Message, ProtocolError, Ready

__all__ = ["BotError", "BotHandle", "BotState"]

EventCallback = Callable[["BotHandle", Message], Awaitable[None]]
ExitCallback = Callable[["BotHandle"], Awaitable[None]]


class BotState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    EXITED = "exited"


class BotError(Exception):
    """A bot answered a request with an error, or not at all."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BotHandle:
    def __init__(
        self,
        process: BaseProcess,
        sock: socket.socket,
        on_event: EventCallback,
        on_exit: ExitCallback,
    ) -> None:
        self.process = process
        self.pid: int = process.pid or 0
        self.state = BotState.STARTING
        self.session_id: str | None = None
        self.spawned_at = time.monotonic()
        self.ready_at: float | None = None
        self.last_seen = time.monotonic()
        self.exit_code: int | None = None
        #: Set when the pool killed it for missing heartbeats.
        self.hung = False
        #: Set when the bot's cgroup recorded an OOM kill.
        self.oom_killed = False
        self.ready = asyncio.get_running_loop().create_future()
        self._sock = sock
        self._on_event = on_event
        self._on_exit = on_exit
        self._channel: Channel | None = None
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._req_ids = itertools.count(1)
        self._reader: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()
        self._exit_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._channel = await Channel.open(self._sock)
        self._reader = asyncio.create_task(self._read(), name=f"bot-{self.pid}-reader")
        asyncio.get_running_loop().add_reader(self.process.sentinel, self._on_sentinel)

    @property
    def spawn_ms(self) -> float | None:
        if self.ready_at is None:
            return None
        return (self.ready_at - self.spawned_at) * 1000

    async def send(self, message: Message) -> None:
        if self._channel is None or self.state is BotState.EXITED:
            raise BotError("bot_gone", f"bot {self.pid} has exited")
        try:
            await self._channel.send(message)
        except (ConnectionError, OSError) as exc:
            raise BotError("bot_gone", f"bot {self.pid} is unreachable: {exc}") from None

    async def request(self, message: Message, timeout: float) -> Message:
        """Send a request (its ``req`` replaced by the next id) and wait for the reply
        carrying the same ``req``; an :class:`~bots.protocol.Error` reply raises."""
        req = next(self._req_ids)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            await self.send(dataclasses.replace(message, req=req))  # type: ignore[call-arg]
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise BotError("bot_timeout", f"bot {self.pid} did not answer in {timeout} s") from None
        finally:
            self._pending.pop(req, None)
        if isinstance(reply, Error):
            raise BotError(reply.code, reply.message)
        return reply

    def kill(self) -> None:
        if self.state is not BotState.EXITED:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def wait_exited(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._exited.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def describe_exit(self) -> str:
        code = self.exit_code
        if code is None:
            return "unknown"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    async def _read(self) -> None:
        assert self._channel is not None
        while True:
            try:
                message = await self._channel.recv()
            except ProtocolError as exc:
                logger.error(f"bot {self.pid}: {exc}; killing it")
                self.kill()
                return
            if message is None:
                return
            self.last_seen = time.monotonic()
            if isinstance(message, Heartbeat):
                continue
            if isinstance(message, Ready):
                self.ready_at = time.monotonic()
                if self.state is BotState.STARTING:
                    self.state = BotState.IDLE
                if not self.ready.done():
                    self.ready.set_result(None)
                continue
            req = getattr(message, "req", None)
            if isinstance(req, int) and req in self._pending:
                future = self._pending[req]
                if not future.done():
                    future.set_result(message)
                continue
            await self._on_event(self, message)

    def _on_sentinel(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.process.sentinel)
        self.process.join(0)
        self.exit_code = self.process.exitcode
        self.state = BotState.EXITED
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BotError("bot_gone", f"bot {self.pid} exited"))
        if not self.ready.done():
            self.ready.set_exception(BotError("bot_gone", f"bot {self.pid} exited"))
            self.ready.exception()  # retrieved: a bot dying during start-up is not an error here
        self._exit_task = loop.create_task(self._finish_exit(), name=f"bot-{self.pid}-exit")
        self._exit_task.add_done_callback(self._exit_done)

    def _exit_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error(f"bot {self.pid}: exit handling failed")

    async def _finish_exit(self) -> None:
        # Children it started (its process group) do not outlive it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        # Drain what the bot wrote before it died (its last transcript lines, its bye).
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if self._channel is not None:
            await self._channel.close()
        self.process.close()
        self._exited.set()
        await self._on_exit(self)

    async def close(self) -> None:
        """Kill the bot if it runs and wait for it to be reaped. Safe to call twice."""
        self.kill()
        await self.wait_exited(5.0)
