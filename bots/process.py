"""A bot process: one warm connection, one call of the bot file, then exit.

The spawner starts this in a child forked from the zygote, which has imported the bot file,
and talks to it over a socketpair (see :mod:`bots.protocol`). Lifecycle::

    prepare (the peer connection) → ready
    → assign (the session: its id, its body, its first offer) → answer → bot(runner_args)
    → … → bye → exit

The bot file's ``bot(runner_args)`` gets pipecat's ``SmallWebRTCRunnerArguments`` with this
process's connection, already answered: the answer comes from the warm process, before the
user's pipeline is built, and the pipeline is built while the caller completes ICE and DTLS.

A bot never serves a second call: whatever state a call leaves behind dies with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import deque
from typing import Any

import uvloop
from loguru import logger
from opentelemetry import trace
from pipecat.runner.types import SmallWebRTCRunnerArguments

from bots.bot_file import BotFunction, load_bot
from bots.config import BotConfig
from bots.connection import CallConnection, prepare_connection
from bots.faults import inject_fault, requested_fault
from bots.protocol import (
    Answer,
    Assign,
    Bye,
    Candidates,
    Channel,
    Error,
    Hangup,
    Heartbeat,
    Logs,
    Offer,
    Ok,
    ProtocolError,
    Ready,
    State,
    Transcript,
    Turn,
)
from bots.recording import CallRecording, install
from bots.turn_metrics import TurnReport
from common.logs import LogRecord, configure_logging
from common.record import TranscriptLine
from common.tracing import Tracing, extract
from media.ports import NoFreePort

__all__ = ["Bot", "bot_main"]


#: Log lines waiting to travel to the spawner; beyond this the oldest are dropped.
MAX_PENDING_LOG_LINES = 500
#: pipecat runs ``setup_pipeline_worker`` from the files listed here (see bots.recording).
SETUP_FILES_ENV = "PIPECAT_SETUP_FILES"
SETUP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipecat_setup.py")


def bot_main(sock: socket.socket, config: BotConfig) -> None:
    """Entry point of a bot process (the target of the zygote's fork).

    Logging and tracing are set up here, after the fork: their exporter threads and buffers
    must belong to this process alone.
    """
    # Its own process group: whatever it starts (espeak-ng) is ended with it by the spawner.
    os.setpgid(0, 0)
    _add_setup_file(os.environ)
    bot = Bot(config, sock)
    configure_logging("bot", os.environ, also=bot.keep_log_line)
    tracing = Tracing.setup("voicebots-bot", os.environ)
    # The spawner ends a bot over the socket; SIGINT from a terminal's Ctrl-C goes to the
    # whole process group and must not kill live calls before the spawner drains them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        uvloop.run(bot.run())
    except ConnectionError:
        # The spawner went away (or retired this bot before it was ready): nothing to serve.
        pass
    finally:
        tracing.shutdown()


def _add_setup_file(environ: Any) -> None:
    """List voicebots' setup file in ``PIPECAT_SETUP_FILES``, beside the user's own."""
    listed = [f for f in environ.get(SETUP_FILES_ENV, "").split(os.pathsep) if f]
    if SETUP_FILE not in listed:
        environ[SETUP_FILES_ENV] = os.pathsep.join([*listed, SETUP_FILE])


def _end_reason(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"bot_error: {type(exc).__name__}" + (f": {message}" if message else "")


class Bot:
    def __init__(self, config: BotConfig, sock: socket.socket) -> None:
        self._config = config
        self._sock = sock
        self._bot: BotFunction = load_bot(config.bot)
        self._channel: Channel | None = None
        self._peer: CallConnection | None = None
        self._recording: CallRecording | None = None
        self._connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._end_reason = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log_lines: deque[LogRecord] = deque(maxlen=MAX_PENDING_LOG_LINES)
        self._logs_waiting = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_call = False

    def keep_log_line(self, line: LogRecord) -> None:
        """A logging sink: lines logged during a call travel to the spawner's record."""
        if not self._in_call or self._loop is None:
            return
        self._log_lines.append(line)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._logs_waiting.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._channel = channel = await Channel.open(self._sock)
        started = time.monotonic()
        try:
            self._peer = prepare_connection(self._config)
            prepare_ms = round((time.monotonic() - started) * 1000, 1)
            await channel.send(Ready(pid=os.getpid(), prepare_ms=prepare_ms))
            self._spawn(self._heartbeat())
            first = await channel.recv()
            if first is None or isinstance(first, Hangup):
                return  # retired while idle
            if not isinstance(first, Assign):
                raise ProtocolError(f"expected 'assign', got {first.type!r}")
            await self._take_call(first)
        finally:
            await self._close()

    async def _take_call(self, assign: Assign) -> None:
        # One bot, one call: every later log line of this process belongs to this session.
        logger.configure(extra={"session_id": assign.session_id})
        self._in_call = True
        self._spawn(self._forward_logs())
        tracer = trace.get_tracer("voicebots.bot")
        with tracer.start_as_current_span(
            "call",
            context=extract(assign.trace),
            attributes={
                "voicebots.session_id": assign.session_id,
                "voicebots.bot_pid": os.getpid(),
            },
        ) as span:
            rejected = await self._answer(assign)
            if rejected:
                reason, failed = rejected, True
            else:
                reason, failed = await self._serve(assign)
            span.set_attribute("voicebots.end_reason", reason)
        await self._flush_logs()  # the record is closed at bye; logs after it would be lost
        await self._send(Bye(end_reason=reason, failed=failed))

    async def _answer(self, assign: Assign) -> str:
        """Answer the call's first offer; or, if it cannot be answered, send the error and
        return the end reason."""
        assert self._peer is not None
        req = assign.req
        try:
            answer = await self._peer.answer(assign.sdp, assign.sdp_type)
        except Exception as exc:
            # A full UDP port range is the server's shortage, not the caller's mistake.
            code = "no_ports" if isinstance(exc, NoFreePort) else "bad_offer"
            logger.warning(f"offer rejected ({code}): {exc}")
            await self._send(Error(req=req, code=code, message=str(exc)))
            return code
        await self._send(
            Answer(req=req, sdp=answer["sdp"], sdp_type=answer["type"], pc_id=answer["pc_id"])
        )
        return ""

    def _watch_connection(self) -> None:
        assert self._peer is not None
        connection = self._peer.connection

        @connection.event_handler("connected")
        async def _on_connected(_connection: Any) -> None:
            self._connected.set()
            await self._send(State(state="connected"))

        @connection.event_handler("failed")
        async def _on_failed(_connection: Any) -> None:
            logger.warning("peer connection failed")
            self._end("ice_failed")

        @connection.event_handler("closed")
        async def _on_closed(_connection: Any) -> None:
            # Closed by the caller (its "peer left" message), or after a failure.
            self._end("client_hangup")

    async def _serve(self, assign: Assign) -> tuple[str, bool]:
        """Run ``bot(runner_args)`` until it returns or the call is to end; returns the end
        reason and whether the call failed."""
        assert self._peer is not None
        self._recording = recording = CallRecording(self._on_line, self._on_turn)
        install(recording)
        self._watch_connection()
        fault = requested_fault(assign.body) if self._config.faults else None
        if fault is not None:
            self._spawn(inject_fault(*fault))
        self._spawn(self._read_commands())
        self._spawn(self._watchdog())
        runner_args = SmallWebRTCRunnerArguments(
            webrtc_connection=self._peer.connection,
            body=assign.body if assign.body is not None else {},
            session_id=assign.session_id,
        )
        logger.info("answered")
        bot_task = self._spawn(self._bot(runner_args))
        stop_task = self._spawn(self._stop.wait())
        await asyncio.wait({bot_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if not bot_task.done() and self._end_reason == "client_hangup":
            # The bot file's own "client disconnected" handler usually ends its pipeline.
            await asyncio.wait({bot_task}, timeout=self._config.end_grace)
        if not bot_task.done():
            # Hang-up, a timeout or the caller gone: the pipelines end, then bot() returns.
            await recording.cancel_workers()
            with contextlib.suppress(Exception):
                await self._peer.connection.disconnect()
            await asyncio.wait({bot_task}, timeout=self._config.end_grace)
            if not bot_task.done():
                logger.warning(
                    f"bot() had not returned {self._config.end_grace} s after the hang-up; "
                    "cancelling it"
                )
                bot_task.cancel()
                await asyncio.wait({bot_task}, timeout=1.0)
        await recording.close()
        error = None if bot_task.cancelled() or not bot_task.done() else bot_task.exception()
        if error is not None:
            logger.opt(exception=error).error(f"bot() raised {type(error).__name__}: {error}")
            reason, failed = _end_reason(error), True
        else:
            reason = self._end_reason or "ended"
            failed = reason == "ice_failed"
        with contextlib.suppress(Exception):
            await self._peer.connection.disconnect()
        logger.info(f"ended ({reason})")
        return reason, failed

    def _end(self, reason: str) -> None:
        if not self._end_reason:
            self._end_reason = reason
        self._stop.set()

    async def _read_commands(self) -> None:
        assert self._channel is not None
        while True:
            message = await self._channel.recv()
            if message is None:
                self._end("spawner_lost")
                return
            if isinstance(message, Hangup):
                self._end(message.reason or "hangup")
            elif isinstance(message, Offer):
                self._spawn(self._offer(message))
            elif isinstance(message, Candidates):
                self._spawn(self._add_candidates(message))
            else:
                logger.warning(f"ignoring unexpected {message.type!r}")

    async def _offer(self, message: Offer) -> None:
        """A renegotiation of the call (a new offer, maybe restarting the peer connection)."""
        assert self._peer is not None
        if self._stop.is_set():
            reason = self._end_reason or "ended"
            await self._send(
                Error(req=message.req, code="call_ended", message=f"the call has ended ({reason})")
            )
            return
        try:
            answer = await self._peer.renegotiate(message.sdp, message.sdp_type, message.restart_pc)
        except Exception as exc:
            await self._send(Error(req=message.req, code="bad_offer", message=str(exc)))
            return
        await self._send(
            Answer(
                req=message.req, sdp=answer["sdp"], sdp_type=answer["type"], pc_id=answer["pc_id"]
            )
        )

    async def _add_candidates(self, message: Candidates) -> None:
        assert self._peer is not None
        try:
            await self._peer.add_candidates(message.candidates)
        except Exception as exc:
            await self._send(Error(req=message.req, code="bad_candidate", message=str(exc)))
            return
        await self._send(Ok(req=message.req))

    async def _watchdog(self) -> None:
        """Ends calls that never connect, go silent, or run past their limit."""
        config = self._config
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=config.connect_timeout)
        except TimeoutError:
            self._end("connect_timeout")
            return
        assert self._recording is not None
        transcript = self._recording.transcript
        transcript.last_audio_at = time.monotonic()
        tick = min(1.0, config.idle_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - started >= config.max_call_seconds:
                self._end("max_duration")
                return
            if now - transcript.last_audio_at >= config.idle_timeout:
                self._end("idle_timeout")
                return

    async def _heartbeat(self) -> None:
        while True:
            await self._send(Heartbeat())
            await asyncio.sleep(self._config.heartbeat_interval)

    async def _on_line(self, line: TranscriptLine) -> None:
        await self._send(Transcript(role=line.role, text=line.text, ts=line.ts))

    async def _on_turn(self, report: TurnReport) -> None:
        logger.info(f"turn {report.get('turn')}: {report}")
        await self._send(Turn(report=report))

    async def _forward_logs(self) -> None:
        while True:
            await self._logs_waiting.wait()
            self._logs_waiting.clear()
            await self._flush_logs()

    async def _flush_logs(self) -> None:
        if not self._log_lines:
            return
        lines = list(self._log_lines)
        self._log_lines.clear()
        await self._send(Logs(lines=lines))

    async def _send(self, message: Any) -> None:
        if self._channel is None:
            return
        try:
            await self._channel.send(message)
        except (ConnectionError, OSError):
            # The spawner is gone; the call ends through the command reader.
            self._end("spawner_lost")

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
