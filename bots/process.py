"""A bot process: one warm pipeline, one call, then exit.

The spawner starts this in a child forked from the preloaded zygote and talks to it over a
socketpair (see :mod:`bots.protocol`). Lifecycle::

    prepare (build pipeline, load VAD) → ready → gather ICE candidates, rehearse the answer
    → assign (offer → answer) → call → bye → exit

A bot never serves a second call: whatever state a call leaves behind dies with the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections import deque
from typing import Any

import uvloop
from loguru import logger
from opentelemetry import trace
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.workers.runner import WorkerRunner

from bots.config import BotConfig
from bots.faults import inject_fault, requested_fault
from bots.pipeline import CallPipeline, cancel_pipeline, prepare_call
from bots.protocol import Channel, Message, ProtocolError
from bots.record import TranscriptLine
from bots.rehearsal import rehearse_answer
from bots.turn_metrics import TurnReport
from media import ice, interfaces
from media.logs import LogRecord, configure_logging
from media.ports import NoFreePort
from media.tracing import Tracing, extract

__all__ = ["Bot", "bot_main"]


#: Log lines waiting to travel to the spawner; beyond this the oldest are dropped.
MAX_PENDING_LOG_LINES = 500
#: After its answer, a bot waits for the spawner's ``start`` (sent within
#: ``spawner.pool.START_HOLD``) at most this long before it starts its pipeline anyway.
START_WAIT = 1.0


def bot_main(sock: socket.socket, config: BotConfig) -> None:
    """Entry point of a bot process (the target of the zygote's fork).

    Logging and tracing are set up here, after the fork: their exporter threads and buffers
    must belong to this process alone.
    """
    # Its own process group: whatever it starts (espeak-ng) is ended with it by the spawner.
    os.setpgid(0, 0)
    bot = Bot(config, sock)
    configure_logging("bot", os.environ, also=bot.keep_log_line)
    tracing = Tracing.setup("voicebots-bot", os.environ)
    # The spawner ends a bot over the socket; SIGINT from a terminal's Ctrl-C goes to the
    # whole process group and must not kill live calls before the spawner drains them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        uvloop.run(bot.run(tracing_enabled=tracing.enabled))
    except ConnectionError:
        # The spawner went away (or retired this bot before it was ready): nothing to serve.
        pass
    finally:
        tracing.shutdown()


def _answer_message(req: Any, answer: dict[str, Any]) -> Message:
    return {
        "type": "answer",
        "req": req,
        "sdp": answer["sdp"],
        "sdp_type": answer["type"],
        "pc_id": answer["pc_id"],
    }


class Bot:
    def __init__(self, config: BotConfig, sock: socket.socket) -> None:
        self._config = config
        self._sock = sock
        self._channel: Channel | None = None
        self._call: CallPipeline | None = None
        self._connected = asyncio.Event()
        self._start = asyncio.Event()
        self._stop = asyncio.Event()
        self._end_reason = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log_lines: deque[LogRecord] = deque(maxlen=MAX_PENDING_LOG_LINES)
        self._logs_waiting = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_call = False
        self._tracing = False
        self._gathered_ahead = False
        #: Set when the host's addresses change under the candidates gathered ahead.
        self._stale = asyncio.Event()

    def keep_log_line(self, line: LogRecord) -> None:
        """A logging sink: lines logged during a call travel to the spawner's record."""
        if not self._in_call or self._loop is None:
            return
        self._log_lines.append(line)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._logs_waiting.set)

    async def run(self, tracing_enabled: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._tracing = tracing_enabled
        self._channel = channel = await Channel.open(self._sock)
        started = time.monotonic()
        try:
            interfaces.read_ahead()  # the answer's ICE gathering need not list them
            self._call = self._prepare()
            await channel.send(
                {
                    "type": "ready",
                    "pid": os.getpid(),
                    "prepare_ms": round((time.monotonic() - started) * 1000, 1),
                }
            )
            self._spawn(self._heartbeat())
            await self._gather_ahead()
            await self._rehearse()
            first = await self._first_message(channel)
            if first is None or first["type"] == "hangup":
                return  # retired while idle, or its candidates went stale
            if first["type"] != "assign":
                raise ProtocolError(f"expected 'assign', got {first['type']!r}")
            await self._take_call(first)
        finally:
            await self._close()

    def _prepare(self) -> CallPipeline:
        return prepare_call(self._config, self._on_line, self._on_turn, tracing=self._tracing)

    async def _gather_ahead(self) -> None:
        """Gather the call's candidates before its offer (see ``CallPipeline.gather_ahead``)."""
        assert self._call is not None
        try:
            self._gathered_ahead = await self._call.gather_ahead()
        except Exception as exc:
            # A full UDP port range, say. That peer cannot gather again: the call gets a fresh
            # pipeline, whose answer gathers (and reports its own error if it fails too).
            logger.warning(f"could not gather ICE candidates ahead of the offer: {exc!r}")
            stale, self._call = self._call, self._prepare()
            with contextlib.suppress(Exception):
                await stale.connection.disconnect()

    async def _first_message(self, channel: Channel) -> Message | None:
        """The spawner's first message; ``None`` if first the host's addresses change under
        the candidates gathered ahead: the bot then exits, and the pool starts a fresh one."""
        if not self._gathered_ahead:
            return await channel.recv()
        received = asyncio.ensure_future(channel.recv())
        stale = asyncio.ensure_future(self._stale.wait())
        try:
            await asyncio.wait({received, stale}, return_when=asyncio.FIRST_COMPLETED)
            if received.done():
                return received.result()
        finally:
            for waiting in (received, stale):
                waiting.cancel()
        logger.info("the host's addresses changed under the candidates gathered ahead; exiting")
        return None

    async def _rehearse(self) -> None:
        """Rehearse the answer in idle time (an offer arriving meanwhile waits its ~5 ms);
        after prepare_call, so that the rehearsal's peer uses the call's ICE policy too."""
        try:
            await rehearse_answer(self._gathered_ahead)
        except Exception as exc:
            # Only speed is lost (a full UDP port range, say): the offer reports its own error.
            logger.warning(f"answer rehearsal failed: {exc!r}")

    async def _take_call(self, assign: Message) -> None:
        received_ns = time.time_ns()
        session_id = str(assign.get("session_id", ""))
        # One bot, one call: every later log line of this process belongs to this session.
        logger.configure(extra={"session_id": session_id})
        self._in_call = True
        self._spawn(self._forward_logs())
        # Answers first: the answer's allocations start no collection (one, 0.16-0.2 ms, came
        # due in each), and the call's span, which begins at the assign, is made once the
        # burst is answered (~0.2 ms of CPU, ~0.7 ms in a bot's first burst).
        gc.disable()
        try:
            rejected = await self._answer(assign)
        finally:
            gc.enable()
        stop_task = None if rejected else await self._until_started(assign)
        tracer = trace.get_tracer("voicebots.bot")
        with tracer.start_as_current_span(
            "call",
            context=extract(assign.get("trace")),
            attributes={"voicebots.session_id": session_id, "voicebots.bot_pid": os.getpid()},
            start_time=received_ns,
        ) as span:
            reason = rejected if stop_task is None else await self._serve(stop_task)
            span.set_attribute("voicebots.end_reason", reason)

    async def _answer(self, assign: Message) -> str:
        """Send the offer's answer; or, if it cannot be answered, the error and ``bye``, and
        return the end reason."""
        assert self._channel is not None and self._call is not None
        # Answers first: with host candidates only, the ICE checks of this bot's own start
        # once its burst is answered. (A relayed candidate needs them early: the TURN server
        # lets the caller's checks through once the bot's own have given the caller's address
        # a permission.)
        if self._gathered_ahead:
            ice.hold_checks()
        try:
            answer = await self._call.answer(
                str(assign["sdp"]), str(assign.get("sdp_type", "offer"))
            )
        except Exception as exc:
            # A full UDP port range is the server's shortage, not the caller's mistake.
            code = "no_ports" if isinstance(exc, NoFreePort) else "bad_offer"
            logger.warning(f"offer rejected ({code}): {exc}")
            await self._channel.send(
                {"type": "error", "req": assign.get("req"), "code": code, "message": str(exc)}
            )
            await self._channel.send({"type": "bye", "end_reason": code, "failed": True})
            return code
        await self._channel.send(_answer_message(assign.get("req"), answer))
        return ""

    async def _until_started(self, assign: Message) -> asyncio.Task[Any]:
        """Serve the answered call's commands and wait for the spawner's ``start``; returns
        the task that completes when the call is to end."""
        assert self._call is not None
        call = self._call

        @call.connection.event_handler("connected")
        async def _on_connected(_connection: Any) -> None:
            self._connected.set()
            await self._send({"type": "state", "state": "connected"})

        fault = requested_fault(assign.get("request_data")) if self._config.faults else None
        if fault is not None:
            self._spawn(inject_fault(*fault))
        self._spawn(self._read_commands())
        self._spawn(self._watchdog())
        stop_task = self._spawn(self._stop.wait())
        # Answers first: the pipeline and the bot's own ICE checks start when the spawner says
        # so, once the offers of a burst are answered. Meanwhile aiortc answers the caller's
        # ICE checks (each with its triggered check) and serves DTLS.
        start_task = self._spawn(self._start.wait())
        await asyncio.wait(
            {start_task, stop_task}, timeout=START_WAIT, return_when=asyncio.FIRST_COMPLETED
        )
        start_task.cancel()
        ice.release_checks()
        return stop_task

    async def _serve(self, stop_task: asyncio.Task[Any]) -> str:
        """Run the answered call until ``stop_task`` completes; returns its end reason."""
        assert self._call is not None
        call = self._call
        # Logged (and forwarded to the spawner, ~0.3 ms of CPU) after the burst is answered.
        logger.info("answered")
        if call.preconnect is not None:
            # While ICE and DTLS complete and the caller starts talking.
            self._spawn(call.preconnect())
        runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
        await runner.add_workers(call.task)
        pipeline_task = self._spawn(runner.run())
        await asyncio.wait({pipeline_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if not pipeline_task.done():
            await cancel_pipeline(call.task)
            try:
                await asyncio.wait_for(asyncio.shield(pipeline_task), timeout=5.0)
            except TimeoutError:
                pipeline_task.cancel()
        failed = (
            pipeline_task.done()
            and not pipeline_task.cancelled()
            and (pipeline_task.exception() is not None)
        )
        reason = self._end_reason or call.end_reason or ("error" if failed else "ended")
        with contextlib.suppress(Exception):
            await call.connection.disconnect()
        logger.info(f"ended ({reason})")
        await self._flush_logs()  # the record is closed at bye; logs after it would be lost
        await self._send(
            {"type": "bye", "end_reason": reason, "failed": failed or reason == "ice_failed"}
        )
        return reason

    def _end(self, reason: str) -> None:
        if not self._end_reason:
            self._end_reason = reason
        self._stop.set()

    async def _read_commands(self) -> None:
        assert self._channel is not None and self._call is not None
        while True:
            message = await self._channel.recv()
            if message is None:
                self._end("spawner_lost")
                return
            kind = message["type"]
            if kind == "hangup":
                self._end(str(message.get("reason") or "hangup"))
            elif kind == "start":
                self._start.set()
            elif kind == "offer":
                self._spawn(self._renegotiate(message))
            elif kind == "candidates":
                self._spawn(self._add_candidates(message))
            else:
                logger.warning(f"ignoring unknown command {kind!r}")

    async def _renegotiate(self, message: Message) -> None:
        assert self._call is not None
        try:
            answer = await self._call.renegotiate(
                str(message["sdp"]),
                str(message.get("sdp_type", "offer")),
                bool(message.get("restart_pc")),
            )
        except Exception as exc:
            await self._send(
                {
                    "type": "error",
                    "req": message.get("req"),
                    "code": "bad_offer",
                    "message": str(exc),
                }
            )
            return
        await self._send(_answer_message(message.get("req"), answer))

    async def _add_candidates(self, message: Message) -> None:
        from aiortc.sdp import candidate_from_sdp

        assert self._call is not None
        try:
            for item in message.get("candidates") or []:
                text = str(item.get("candidate") or "")
                if text.startswith("candidate:"):
                    text = text[len("candidate:") :]
                if text:
                    candidate = candidate_from_sdp(text)
                    candidate.sdpMid = item.get("sdp_mid")
                    candidate.sdpMLineIndex = item.get("sdp_mline_index")
                    await self._call.connection.add_ice_candidate(candidate)
                else:
                    # An empty candidate is an end-of-candidates marker.
                    await self._call.connection.add_ice_candidate(None)
        except Exception as exc:
            await self._send(
                {
                    "type": "error",
                    "req": message.get("req"),
                    "code": "bad_candidate",
                    "message": str(exc),
                }
            )
            return
        await self._send({"type": "ok", "req": message.get("req")})

    async def _watchdog(self) -> None:
        """Ends calls that never connect, go silent, or run past their limit."""
        assert self._call is not None
        config = self._config
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=config.connect_timeout)
        except TimeoutError:
            self._end("connect_timeout")
            return
        self._call.inbound.last_audio_at = time.monotonic()
        tick = min(1.0, config.idle_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - started >= config.max_call_seconds:
                self._end("max_duration")
                return
            if now - self._call.inbound.last_audio_at >= config.idle_timeout:
                self._end("idle_timeout")
                return

    async def _heartbeat(self) -> None:
        while True:
            await self._send({"type": "heartbeat"})
            await asyncio.sleep(self._config.heartbeat_interval)
            if interfaces.refresh() and self._gathered_ahead and not self._in_call:
                self._stale.set()

    async def _on_line(self, line: TranscriptLine) -> None:
        await self._send({"type": "transcript", **line.to_json()})

    async def _on_turn(self, report: TurnReport) -> None:
        logger.info(f"turn {report.get('turn')}: {report}")
        await self._send({"type": "turn", **report})
        if self._call is not None:
            # The page shows it as the turn's latency (an RTVI server message).
            await self._call.task.queue_frames(
                [RTVIServerMessageFrame(data={"type": "turn-metrics", **report})]
            )

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
        await self._send({"type": "logs", "lines": lines})

    async def _send(self, message: Message) -> None:
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
