"""The messages between the spawner and one bot, over a socketpair.

Each message is one dataclass below, sent as a frame: a 4-byte big-endian length, then UTF-8
JSON of its fields and its ``type``. Requests from the spawner carry ``req`` (an integer) and
the bot's reply echoes it, so several requests can be in flight.

spawner → bot: :class:`Assign` (take this session and answer its first offer), :class:`Offer`
(a renegotiation), :class:`Candidates`, :class:`Hangup` (end the call; idle: exit).

bot → spawner: :class:`Ready`, :class:`Answer`, :class:`Ok`, :class:`Error` (replies),
:class:`Transcript` (one line, as it becomes final), :class:`Turn` (a turn's latency),
:class:`Logs`, :class:`State`, :class:`Heartbeat`, and :class:`Bye`, the last before exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "MAX_FRAME",
    "Answer",
    "Assign",
    "Bye",
    "Candidates",
    "Channel",
    "Error",
    "Hangup",
    "Heartbeat",
    "Logs",
    "Message",
    "Offer",
    "Ok",
    "ProtocolError",
    "Ready",
    "State",
    "Transcript",
    "Turn",
    "decode",
    "encode",
]

#: An SDP is a few kilobytes; anything near this is a bug, not a message.
MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something that is not a protocol message."""


@dataclass(frozen=True)
class Message:
    type: ClassVar[str] = ""


# -- spawner → bot ------------------------------------------------------------------------


@dataclass(frozen=True)
class Assign(Message):
    type: ClassVar[str] = "assign"
    req: int
    session_id: str
    #: The session's first offer, which the bot answers before it starts ``bot()``.
    sdp: str
    sdp_type: str = "offer"
    #: The ``/start`` body (or the offer's ``request_data``): ``runner_args.body``.
    body: Any = None
    #: The W3C trace context of the request that placed the call.
    trace: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Offer(Message):
    type: ClassVar[str] = "offer"
    req: int
    sdp: str
    sdp_type: str = "offer"
    restart_pc: bool = False


@dataclass(frozen=True)
class Candidates(Message):
    type: ClassVar[str] = "candidates"
    req: int
    pc_id: str
    #: ``{candidate, sdp_mid, sdp_mline_index}`` each, as the HTTP API takes them.
    candidates: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Hangup(Message):
    type: ClassVar[str] = "hangup"
    reason: str = "hangup"


# -- bot → spawner ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready(Message):
    type: ClassVar[str] = "ready"
    pid: int
    prepare_ms: float


@dataclass(frozen=True)
class Answer(Message):
    type: ClassVar[str] = "answer"
    req: int
    sdp: str
    sdp_type: str
    pc_id: str


@dataclass(frozen=True)
class Ok(Message):
    type: ClassVar[str] = "ok"
    req: int


@dataclass(frozen=True)
class Error(Message):
    type: ClassVar[str] = "error"
    req: int | None
    code: str
    message: str


@dataclass(frozen=True)
class Transcript(Message):
    type: ClassVar[str] = "transcript"
    role: str
    text: str
    ts: float


@dataclass(frozen=True)
class Turn(Message):
    type: ClassVar[str] = "turn"
    #: The turn's milestones (see :mod:`bots.turn_metrics`).
    report: dict[str, Any]


@dataclass(frozen=True)
class Logs(Message):
    type: ClassVar[str] = "logs"
    lines: list[dict[str, Any]]


@dataclass(frozen=True)
class State(Message):
    type: ClassVar[str] = "state"
    state: str


@dataclass(frozen=True)
class Heartbeat(Message):
    type: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class Bye(Message):
    type: ClassVar[str] = "bye"
    end_reason: str
    failed: bool


_TYPES: dict[str, type[Message]] = {
    cls.type: cls
    for cls in (
        Assign,
        Offer,
        Candidates,
        Hangup,
        Ready,
        Answer,
        Ok,
        Error,
        Transcript,
        Turn,
        Logs,
        State,
        Heartbeat,
        Bye,
    )
}


def encode(message: Message) -> bytes:
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    return json.dumps({"type": message.type, **fields}, separators=(",", ":")).encode()


def decode(payload: bytes) -> Message:
    """The message in ``payload``; :class:`ProtocolError` says what is wrong with it."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolError("frame must be a JSON object with a string 'type'")
    kind = data.pop("type")
    cls = _TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ProtocolError(f"malformed {kind!r} message: {exc}") from None


class Channel:
    """One end of the spawner ↔ bot socketpair, as framed messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_FRAME + 64)
        return cls(reader, writer)

    async def send(self, message: Message) -> None:
        payload = encode(message)
        if len(payload) > MAX_FRAME:
            raise ProtocolError(f"message of {len(payload)} bytes exceeds {MAX_FRAME}")
        async with self._write_lock:
            self._writer.write(_HEADER.pack(len(payload)) + payload)
            await self._writer.drain()

    async def recv(self) -> Message | None:
        """The next message, or ``None`` when the other end has closed."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (size,) = _HEADER.unpack(header)
            if size > MAX_FRAME:
                raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            payload = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return decode(payload)

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
