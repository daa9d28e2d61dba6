"""The message protocol between the spawner and one bot, over a socketpair.

Each message is a JSON object in a frame: a 4-byte big-endian length, then UTF-8 JSON. Every
message has a ``type``. Requests from the spawner carry ``req`` (an integer) and the bot's
reply echoes it, so several requests can be in flight.

spawner → bot
    ``assign``     {req, session_id, sdp, sdp_type, request_data, trace}  — take this call
    ``offer``      {req, sdp, sdp_type, restart_pc}        — renegotiation of the same call
    ``candidates`` {req, pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]}
    ``start``      {}                                       — answered: start the pipeline
    ``hangup``     {reason}                                 — end the call (or, idle: exit)

bot → spawner
    ``ready``      {pid, prepare_ms}                        — warm and waiting for ``assign``
    ``answer``     {req, sdp, sdp_type, pc_id}
    ``ok``         {req}
    ``error``      {req, code, message}
    ``transcript`` {role, text, ts}                         — one line, as it becomes final
    ``state``      {state}                                  — connected, …
    ``heartbeat``  {}
    ``bye``        {end_reason, failed}                     — last message before exit
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

__all__ = ["MAX_FRAME", "Channel", "ProtocolError", "decode_frame"]

#: An SDP is a few kilobytes; anything near this is a bug, not a message.
MAX_FRAME = 1 << 20
_HEADER = struct.Struct(">I")

Message = dict[str, Any]


class ProtocolError(Exception):
    """The peer sent something that is not a protocol message."""


def decode_frame(payload: bytes) -> Message:
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("frame must be a JSON object with a string 'type'")
    return message


class Channel:
    """One end of the spawner ↔ bot socketpair, as framed JSON messages."""

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
        payload = json.dumps(message, separators=(",", ":")).encode()
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
        return decode_frame(payload)

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
