"""Sessions and calls: which bot serves which session, and the record each call leaves.

A session is born at ``POST /start`` (or implicitly with its first offer) and gets a warm bot
at its first offer, which that bot answers before it starts the bot file's
``bot(runner_args)``. It ends when its bot says ``bye`` or
dies. Whatever happens, the transcript lines received so far become the call record in
Redis, written once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from bots.protocol import (
    Answer,
    Assign,
    Bye,
    Candidates,
    Hangup,
    Logs,
    Message,
    Offer,
    State,
    Transcript,
    Turn,
)
from common.contract import CandidatesRequest, OfferRequest
from common.record import CallRecord, CallStatus, TranscriptLine
from common.tracing import inject
from spawner.bot_handle import BotError, BotHandle, BotState
from spawner.config import SpawnerConfig
from spawner.exceptions import CallError
from spawner.metrics import SpawnerMetrics
from spawner.pool import NoCapacity, Pool
from spawner.recorder import Recorder

__all__ = ["CallManager", "Session"]

#: Log lines of a bot kept with its call record.
MAX_LOG_LINES = 200


@dataclass
class Session:
    session_id: str
    created_at: float
    request_data: Any = None
    #: Opaque id of the API key that started the session (signaling's), for the per-key cap.
    owner: str | None = None
    #: Between the cap check and the bot's arrival, the session already counts as a call.
    assigning: bool = False
    bot: BotHandle | None = None
    pc_id: str | None = None
    started_at: float | None = None
    connected_at: float | None = None
    lines: list[TranscriptLine] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    logs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_LOG_LINES))
    record: CallRecord | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: Marks the call active in Redis; runs beside the bot's answer, done before the record.
    opening: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.record is not None:
            return self.record.to_json()
        return {
            "session_id": self.session_id,
            "status": "active" if self.bot is not None else "pending",
            "created_at": self.created_at,
            "started_at": self.started_at,
            "connected_at": self.connected_at,
            "pc_id": self.pc_id,
            "bot_pid": self.bot.pid if self.bot is not None else None,
            "transcript": [line.to_json() for line in self.lines],
            "metrics": {"turns": self.turns},
        }


def _visible_to(session: Session, acting: str | None) -> bool:
    """A request made with another API key than the one that started the session does not
    see it (``acting`` is ``None`` for a session token, which signaling has already bound to
    its session, and when auth is off)."""
    return acting is None or session.owner == acting


def _call_error(exc: BotError) -> CallError:
    """A bot's refusal as the HTTP error for the client: its input (400), the server's
    shortage of UDP ports (503), or the bot's own failure (502)."""
    if exc.code in ("bad_offer", "bad_candidate"):
        return CallError(400, exc.code, exc.message)
    if exc.code == "call_ended":
        return CallError(409, "session_ended", exc.message)
    if exc.code == "no_ports":
        return CallError(503, exc.code, exc.message, retry_after=2.0)
    return CallError(502, exc.code, exc.message)


class CallManager:
    def __init__(
        self, config: SpawnerConfig, pool: Pool, recorder: Recorder, metrics: SpawnerMetrics
    ) -> None:
        self._config = config
        self._pool = pool
        self._recorder = recorder
        self._metrics = metrics
        self.sessions: dict[str, Session] = {}
        self._by_pc: dict[str, Session] = {}
        self._by_pid: dict[int, Session] = {}
        self.ended_by_reason: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- requests from signaling ----------------------------------------------------------

    def create(
        self, request_data: Any = None, session_id: str | None = None, owner: str | None = None
    ) -> Session:
        if not self._pool.accepting:
            raise CallError(503, "draining", "the server is draining", retry_after=5.0)
        self._check_cap(owner)
        session = Session(
            session_id=session_id or uuid.uuid4().hex,
            created_at=time.time(),
            request_data=request_data,
            owner=owner,
        )
        self.sessions[session.session_id] = session
        return session

    def _check_cap(self, owner: str | None, exclude: Session | None = None) -> None:
        """429 if ``owner`` already has its most live calls (``max_calls_per_key``)."""
        cap = self._config.max_calls_per_key
        if owner is None or cap <= 0:
            return
        live = sum(
            1
            for s in self.sessions.values()
            if s.owner == owner
            and s is not exclude
            and (s.bot is not None or s.assigning)
            and s.record is None
        )
        if live >= cap:
            raise CallError(
                429,
                "too_many_calls",
                f"this API key already has {live} live calls, the most allowed "
                f"(VOICEBOTS_MAX_CALLS_PER_KEY={cap})",
                retry_after=5.0,
            )

    def _find(self, session_id: str, acting: str | None) -> Session | None:
        """The session, if ``acting`` may see it (see :func:`_visible_to`)."""
        session = self.sessions.get(session_id)
        return session if session is not None and _visible_to(session, acting) else None

    async def offer(
        self, session_id: str | None, offer: OfferRequest, owner: str | None = None
    ) -> dict[str, Any]:
        """Answer ``offer``. ``owner`` is the requesting API key's: the owner of the session
        created when there is no ``session_id``, else the one the session must have."""
        started = time.monotonic()
        try:
            answer = await self._offer(session_id, offer, owner)
        except CallError as exc:
            self._metrics.offers_rejected.labels(exc.code).inc()
            raise
        self._metrics.assignment_seconds.observe(time.monotonic() - started)
        return answer

    async def _offer(
        self, session_id: str | None, offer: OfferRequest, owner: str | None
    ) -> dict[str, Any]:
        if session_id is None:
            session = self.create(offer.request_data, owner=owner)
        else:
            found = self._find(session_id, owner)
            if found is None:
                raise CallError(404, "unknown_session", f"no session {session_id}")
            session = found
        if session.record is not None:
            raise CallError(409, "session_ended", f"session {session.session_id} has ended")
        if session.bot is not None:
            answer = await self._renegotiate(session, offer)
        elif offer.pc_id is not None:
            raise CallError(404, "unknown_pc", f"no peer connection {offer.pc_id}")
        else:
            answer = await self._assign(session, offer)
        return {**answer, "session_id": session.session_id}

    async def _assign(self, session: Session, offer: OfferRequest) -> dict[str, Any]:
        """Give ``session`` a bot, which answers ``offer``, then starts ``bot()``."""
        self._check_cap(session.owner, exclude=session)
        session.assigning = True
        try:
            bot = await self._pool.acquire()
        except NoCapacity as exc:
            code = "draining" if exc.draining else "no_capacity"
            raise CallError(503, code, str(exc), retry_after=exc.retry_after) from None
        finally:
            session.assigning = False
        session.bot = bot
        session.started_at = time.time()
        bot.session_id = session.session_id
        self._by_pid[bot.pid] = session
        session.opening = self._later(
            self._recorder.open_call(session.session_id, session.started_at, session.owner)
        )
        body = session.request_data if offer.request_data is None else offer.request_data
        assign = Assign(
            req=0,
            session_id=session.session_id,
            body=body,
            sdp=offer.sdp,
            sdp_type=offer.sdp_type,
            trace=inject(),
        )
        try:
            async with self._pool.answering(bot):
                reply = await bot.request(assign, timeout=self._config.answer_timeout)
        except BotError as exc:
            error = _call_error(exc)
            if error.status == 502:  # the bot failed, not the caller: it serves no one else
                bot.kill()
            raise error from None
        logger.bind(session_id=session.session_id).info(f"bot {bot.pid} answered")
        return self._answered(session, reply)

    def _answered(self, session: Session, reply: Message) -> dict[str, Any]:
        if not isinstance(reply, Answer):
            raise CallError(502, "bad_reply", f"the bot replied {reply.type!r} to an offer")
        if session.pc_id is not None:
            self._by_pc.pop(session.pc_id, None)
        session.pc_id = reply.pc_id
        self._by_pc[reply.pc_id] = session
        return {"sdp": reply.sdp, "type": reply.sdp_type, "pc_id": reply.pc_id}

    async def _renegotiate(self, session: Session, offer: OfferRequest) -> dict[str, Any]:
        assert session.bot is not None
        if offer.pc_id is None:
            raise CallError(
                409, "already_connected", "session has a peer connection; send its pc_id"
            )
        if offer.pc_id != session.pc_id:
            raise CallError(404, "unknown_pc", f"no peer connection {offer.pc_id}")
        request = Offer(req=0, sdp=offer.sdp, sdp_type=offer.sdp_type, restart_pc=offer.restart_pc)
        try:
            reply = await session.bot.request(request, timeout=self._config.answer_timeout)
        except BotError as exc:
            raise _call_error(exc) from None
        return self._answered(session, reply)

    async def candidates(
        self, session_id: str | None, request: CandidatesRequest, acting: str | None = None
    ) -> None:
        session = self._by_pc.get(request.pc_id)
        if (
            session is None
            or (session_id is not None and session.session_id != session_id)
            or not _visible_to(session, acting)
        ):
            raise CallError(404, "unknown_pc", f"no peer connection {request.pc_id}")
        if session.bot is None or session.record is not None:
            raise CallError(409, "session_ended", f"session {session.session_id} has ended")
        try:
            await session.bot.request(
                Candidates(req=0, pc_id=request.pc_id, candidates=request.to_json()["candidates"]),
                timeout=self._config.answer_timeout,
            )
        except BotError as exc:
            raise _call_error(exc) from None

    async def hangup(
        self, session_id: str, reason: str = "hangup", acting: str | None = None
    ) -> dict[str, Any] | None:
        """End a call (or forget a session that never got one); ``None`` if unknown."""
        session = self._find(session_id, acting)
        if session is None:
            return None
        if session.bot is None:
            self.sessions.pop(session_id, None)
            return {"session_id": session_id, "status": "cancelled"}
        if session.record is None:
            try:
                await session.bot.send(Hangup(reason=reason))
            except BotError:
                pass
            try:
                await asyncio.wait_for(session.ended.wait(), 5.0)
            except TimeoutError:
                logger.bind(session_id=session_id).warning("bot did not end; killing it")
                session.bot.kill()
                await asyncio.wait_for(session.ended.wait(), 5.0)
        return session.to_json()

    def get(self, session_id: str, acting: str | None = None) -> dict[str, Any] | None:
        session = self._find(session_id, acting)
        return session.to_json() if session is not None else None

    def live_calls(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.bot is not None and s.record is None]

    # -- events from bots -----------------------------------------------------------------

    async def on_bot_event(self, bot: BotHandle, message: Message) -> None:
        session = self._by_pid.get(bot.pid)
        if session is None:
            if not isinstance(message, Logs):
                logger.warning(f"bot {bot.pid}: {message.type!r} outside a call")
            return
        if isinstance(message, Transcript):
            try:
                line = TranscriptLine.from_json(
                    {"role": message.role, "text": message.text, "ts": message.ts}
                )
            except ValueError as exc:
                logger.warning(f"bot {bot.pid}: bad transcript line: {exc}")
                return
            session.lines.append(line)
            self._recorder.line(session.session_id, line)
        elif isinstance(message, Turn):
            session.turns.append(dict(message.report))
            audio_out = message.report.get("audio_out_ms")
            if isinstance(audio_out, int | float):
                self._metrics.voice_to_voice_seconds.observe(audio_out / 1000)
        elif isinstance(message, Logs):
            session.logs.extend(line for line in message.lines if isinstance(line, dict))
        elif isinstance(message, State):
            if message.state == "connected" and session.connected_at is None:
                session.connected_at = time.time()
        elif isinstance(message, Bye):
            await self._finish(session, message.end_reason or "ended", message.failed)
        else:
            logger.warning(f"bot {bot.pid}: unexpected {message.type!r}")

    async def on_bot_exit(self, bot: BotHandle) -> None:
        session = self._by_pid.pop(bot.pid, None)
        if session is not None and session.record is None:
            if bot.oom_killed:
                reason = "bot_crashed: out of memory"
            elif bot.hung:
                reason = "bot_hung"
            else:
                reason = f"bot_crashed: {bot.describe_exit()}"
            logger.bind(session_id=session.session_id).error(reason)
            await self._finish(session, reason, failed=True)
        elif bot.state is not BotState.EXITED or (bot.exit_code or 0) != 0:
            logger.info(f"bot {bot.pid} exited ({bot.describe_exit()})")

    async def _finish(self, session: Session, reason: str, failed: bool) -> None:
        if session.record is not None:
            return
        record = CallRecord(
            session_id=session.session_id,
            status=CallStatus.FAILED if failed else CallStatus.COMPLETED,
            started_at=session.started_at or session.created_at,
            ended_at=time.time(),
            end_reason=reason,
            transcript=tuple(session.lines),
            bot_pid=session.bot.pid if session.bot is not None else None,
            metrics={"turns": session.turns} if session.turns else {},
            logs=tuple(session.logs),
            owner=session.owner,
        )
        session.record = record
        self.ended_by_reason[reason] = self.ended_by_reason.get(reason, 0) + 1
        self._metrics.calls_ended.labels(reason).inc()
        if session.pc_id is not None:
            self._by_pc.pop(session.pc_id, None)
        if session.opening is not None:
            await asyncio.wait({session.opening})  # "active" must not land after the record
        try:
            await self._recorder.finish(record)
        except Exception as exc:
            logger.bind(session_id=session.session_id).error(f"could not store the record: {exc!r}")
        session.ended.set()
        logger.bind(session_id=session.session_id).info(
            f"call {record.status.value} ({reason}), {len(record.transcript)} transcript lines"
        )
        # Ended sessions stay answerable from memory for a while, then only from Redis.
        self._later(self._forget(session.session_id, after=60.0))

    # -- housekeeping ---------------------------------------------------------------------

    def start(self) -> None:
        self._later(self._expire_pending())

    async def _expire_pending(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self._config.start_ttl / 2))
            cutoff = time.time() - self._config.start_ttl
            for session in list(self.sessions.values()):
                if session.bot is None and session.created_at < cutoff:
                    logger.bind(session_id=session.session_id).info("no offer; forgotten")
                    self.sessions.pop(session.session_id, None)

    async def _forget(self, session_id: str, after: float) -> None:
        await asyncio.sleep(after)
        self.sessions.pop(session_id, None)

    def _later(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a task this manager owns (cancelled at close)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
