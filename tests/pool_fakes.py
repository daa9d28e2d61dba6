"""In-process stand-ins for bot processes, for the unit tests of the pool and its calls.

:class:`FakeZygote` gives the pool what :meth:`spawner.zygote.Zygote.spawn` gives it: a process
and the spawner's end of a socketpair. Nothing is forked. The bot at the other end is a task
of this event loop speaking the real protocol (:mod:`bots.protocol`), and its "process" is a
pipe: the pipe's write end closing is the process exiting, which :class:`~spawner.bot_handle.
BotHandle` notices as it notices a real process's sentinel. So the pool, the handles and the
call manager run their own code unchanged; only what a real bot would do is scripted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from typing import cast

from bots.protocol import (
    Answer,
    Assign,
    Bye,
    Candidates,
    Channel,
    Error,
    Hangup,
    Heartbeat,
    Message,
    Offer,
    Ok,
    Ready,
)
from common.record import CallRecord, TranscriptLine
from spawner.bot_handle import BotHandle, BotState
from spawner.calls import CallManager
from spawner.config import SpawnerConfig
from spawner.limits import Limiter, LimitsConfig
from spawner.metrics import SpawnerMetrics
from spawner.pool import Pool
from spawner.recorder import Recorder
from spawner.zygote import Zygote

#: Fake pids start above any pid Linux hands out (PID_MAX_LIMIT, 2**22): the handle's clean-up
#: (``os.killpg`` on the bot's group) then finds no such process and touches nothing real.
FAKE_PID_BASE = 1 << 22


@dataclass
class Behavior:
    """What a fake bot does."""

    #: Seconds from the fork to ``ready``; ``None``: never ready.
    ready_after: float | None = 0.0
    #: Seconds between heartbeats; ``None``: none (the pool's heartbeat timeout is 10 s).
    heartbeat: float | None = None
    #: What it does with its call's first offer: ``"answer"`` it, stay ``"silent"``, or refuse
    #: it with this error code (then say bye and exit, as a bot does with an offer it cannot
    #: answer: ``"bad_offer"``, ``"no_ports"``).
    assign: str = "answer"


class FakeProcess:
    """What a bot handle uses of a process: pid, sentinel, exit code, join and close."""

    def __init__(self, pid: int, on_kill: Callable[[], None]) -> None:
        self.pid = pid
        self.sentinel, self._alive = os.pipe()
        self.exitcode: int | None = None
        self._on_kill = on_kill
        self._closed = False

    def exit(self, code: int) -> None:
        if self.exitcode is None:
            self.exitcode = code
            os.close(self._alive)  # the sentinel becomes readable

    def kill(self) -> None:
        """SIGKILL, as the handle would send it to a real bot."""
        self._on_kill()

    def join(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.sentinel)


class FakeHandle(BotHandle):
    """The real handle, except that ``kill()`` ends the stand-in process, not a pid."""

    def kill(self) -> None:
        if self.state is not BotState.EXITED:
            cast(FakeProcess, self.process).kill()


class FakeBot:
    """The bot's side: answers the spawner as a bot does, and is steered by the test."""

    def __init__(self, pid: int, sock: socket.socket, behavior: Behavior) -> None:
        self.pid = pid
        self.behavior = behavior
        self.process = FakeProcess(pid, lambda: self.exit(-signal.SIGKILL))
        self.received: list[Message] = []
        self.session_id: str | None = None
        self._sock = sock
        self._channel: Channel | None = None
        self._opened = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"fake-bot-{pid}")

    @property
    def alive(self) -> bool:
        return self.process.exitcode is None

    async def say(self, message: Message) -> None:
        """Send ``message`` to the spawner, as the bot's pipeline would."""
        await self._opened.wait()
        assert self._channel is not None
        await self._channel.send(message)

    def stop_heartbeats(self) -> None:
        self.behavior.heartbeat = None

    def exit(self, code: int) -> None:
        """End the process at once (a crash, a kill), with exit code ``code``."""
        self._task.cancel()
        self._die(code)

    def _die(self, code: int) -> None:
        # Its socket closes and its sentinel fires, as when a bot process ends.
        if self.alive:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self.process.exit(code)

    async def wait_closed(self) -> None:
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        channel = self._channel = await Channel.open(self._sock)
        self._opened.set()
        beating: asyncio.Task[None] | None = None
        try:
            if self.behavior.ready_after is not None:
                await asyncio.sleep(self.behavior.ready_after)
                await channel.send(Ready(pid=self.pid, prepare_ms=1.0))
            beating = asyncio.create_task(self._beat(channel))
            while (message := await channel.recv()) is not None:
                self.received.append(message)
                if not await self._reply(channel, message):
                    break
        finally:
            if beating is not None:
                beating.cancel()
            await channel.close()
        self._die(0)

    async def _beat(self, channel: Channel) -> None:
        while True:
            interval = self.behavior.heartbeat
            await asyncio.sleep(interval or 0.05)
            if interval is not None:
                await channel.send(Heartbeat())

    async def _reply(self, channel: Channel, message: Message) -> bool:
        """Answer one message; ``False`` when the bot is to exit."""
        if isinstance(message, Assign):
            self.session_id = message.session_id
            if self.behavior.assign == "silent":
                return True
            if self.behavior.assign != "answer":
                code = self.behavior.assign
                await channel.send(Error(req=message.req, code=code, message=f"{code} (fake)"))
                await channel.send(Bye(end_reason=code, failed=True))
                return False
            await channel.send(
                Answer(
                    req=message.req,
                    sdp=f"v=0 answer to {message.sdp}",
                    sdp_type="answer",
                    pc_id=f"pc-{self.pid}",
                )
            )
        elif isinstance(message, Offer):
            await channel.send(
                Answer(
                    req=message.req,
                    sdp=f"v=0 answer to {message.sdp}",
                    sdp_type="answer",
                    pc_id=f"pc-{self.pid}",
                )
            )
        elif isinstance(message, Candidates):
            await channel.send(Ok(req=message.req))
        elif isinstance(message, Hangup):
            if self.session_id is not None:
                await channel.send(Bye(end_reason=message.reason, failed=False))
            return False
        return True


class FakeZygote(Zygote):
    """Spawns :class:`FakeBot` s. The pool calls only ``spawn()``; nothing of the real
    zygote's own state (its fork server) is made."""

    def __init__(self, behavior: Behavior | None = None, failures: int = 0) -> None:
        self.behavior = behavior or Behavior()
        #: The next spawns that fail, as a broken fork server's would.
        self.failures = failures
        self.attempts = 0
        self.bots: list[FakeBot] = []

    async def spawn(self) -> tuple[BaseProcess, socket.socket]:
        await asyncio.sleep(0)
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("the fork server is gone (fake)")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        bot = FakeBot(FAKE_PID_BASE + len(self.bots) + 1, theirs, replace(self.behavior))
        self.bots.append(bot)
        return cast(BaseProcess, bot.process), ours

    def bot(self, pid: int) -> FakeBot:
        (bot,) = [b for b in self.bots if b.pid == pid]
        return bot

    async def close(self) -> None:
        for bot in self.bots:
            bot.exit(-signal.SIGKILL)
        await asyncio.gather(*(bot.wait_closed() for bot in self.bots))
        for bot in self.bots:  # those the pool never took a handle for
            bot.process.close()


class RecordingLimiter(Limiter):
    """Enforces nothing; remembers which bots it was asked about."""

    def __init__(self, fail_apply: int = 0) -> None:
        super().__init__(LimitsConfig())
        self.fail_apply = fail_apply
        self.applied: list[int] = []
        self.engaged: list[int] = []
        self.released: list[int] = []
        self.out_of_memory_pids: set[int] = set()

    def apply(self, pid: int) -> None:
        if self.fail_apply > 0:
            self.fail_apply -= 1
            raise PermissionError("cgroup not writable (fake)")
        self.applied.append(pid)

    def engage(self, pid: int) -> None:
        self.engaged.append(pid)

    def out_of_memory(self, pid: int) -> bool:
        return pid in self.out_of_memory_pids

    async def release(self, pid: int) -> None:
        self.released.append(pid)


class MemoryRecorder(Recorder):
    """The recorder's interface to the call manager, kept in memory. (Its delivery to Redis
    and its spool are tested with a real redis-server and real files elsewhere.)"""

    def __init__(self, open_delay: float = 0.0) -> None:
        #: How long marking a call active takes (Redis answering slowly).
        self.open_delay = open_delay
        #: ``("open" | "finish", session_id)`` in the order they were done.
        self.events: list[tuple[str, str]] = []
        self.owners: dict[str, str | None] = {}
        self.journal: dict[str, list[TranscriptLine]] = {}
        self.records: list[CallRecord] = []

    async def open_call(self, session_id: str, started_at: float, owner: str | None) -> None:
        await asyncio.sleep(self.open_delay)
        self.events.append(("open", session_id))
        self.owners[session_id] = owner

    def line(self, session_id: str, line: TranscriptLine) -> None:
        self.journal.setdefault(session_id, []).append(line)

    async def finish(self, record: CallRecord) -> bool:
        self.events.append(("finish", record.session_id))
        self.records.append(record)
        return True

    def record(self, session_id: str) -> CallRecord:
        (record,) = [r for r in self.records if r.session_id == session_id]
        return record


@dataclass
class Spawner:
    """The spawner's pool and call manager (as ``spawner.service`` wires them), on fakes."""

    config: SpawnerConfig
    zygote: FakeZygote
    limiter: RecordingLimiter
    recorder: MemoryRecorder
    pool: Pool
    calls: CallManager
    metrics: SpawnerMetrics
    spawned: list[float] = field(default_factory=list)

    def fake(self, bot: BotHandle | None) -> FakeBot:
        assert bot is not None
        return self.zygote.bot(bot.pid)

    def idle(self) -> int:
        return self.pool.count(BotState.IDLE)


@contextlib.asynccontextmanager
async def running(
    config: SpawnerConfig,
    zygote: FakeZygote | None = None,
    limiter: RecordingLimiter | None = None,
    recorder: MemoryRecorder | None = None,
    wait_idle: int | None = None,
) -> AsyncIterator[Spawner]:
    """A started pool and call manager; with ``wait_idle``, once that many bots are idle.
    Everything is closed after, and no task of theirs is left running."""
    zygote = zygote or FakeZygote()
    limiter = limiter or RecordingLimiter()
    recorder = recorder or MemoryRecorder()
    calls: CallManager
    spawned: list[float] = []
    metrics = SpawnerMetrics(lambda: pool.status())
    pool = Pool(
        config,
        zygote,
        limiter,
        on_event=lambda bot, message: calls.on_bot_event(bot, message),
        on_exit=lambda bot: calls.on_bot_exit(bot),
        on_spawned=spawned.append,
        handle=FakeHandle,
    )
    calls = CallManager(config, pool, recorder, metrics)
    spawner = Spawner(config, zygote, limiter, recorder, pool, calls, metrics, spawned)
    before = asyncio.all_tasks()
    pool.start()
    calls.start()
    try:
        if wait_idle is not None:
            await until(lambda: spawner.idle() == wait_idle, f"{wait_idle} idle bots")
        yield spawner
    finally:
        await pool.close()
        await zygote.close()

        def unfinished() -> set[asyncio.Task[object]]:
            return {t for t in asyncio.all_tasks() - before if not t.done()}

        # The bots' exits are still being handled; then only the call manager's own tasks
        # (forgetting ended sessions later), which its close() cancels, may remain.
        await until(lambda: unfinished() <= calls._tasks, "the bots' exits handled")
        await calls.close()
        assert not unfinished(), f"tasks left running: {unfinished()}"


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait for ``condition`` (the loop runs meanwhile); fail naming ``what`` if it never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never came: {what}")
        await asyncio.sleep(0.005)
