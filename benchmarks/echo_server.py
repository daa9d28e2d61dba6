"""The baseline: a bare aiortc server that echoes each caller's audio back.

It speaks the part of voicebots' public HTTP contract a caller needs — ``POST /start``,
``POST /sessions/{id}/api/offer``, ``GET`` and ``DELETE /api/sessions/{id}`` — so the same
headless caller measures both. Everything runs in one process and one event loop, the way
aiortc's own server example does: each offer creates its peer connection (certificate and
all) and answers once ICE gathering is done; each received audio track is sent straight
back, decoded and re-encoded by aiortc. There is no pool, no pipeline, no IPC.

Run as a process (prints its base URL once it accepts connections)::

    python -m benchmarks.echo_server --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import uuid
from dataclasses import dataclass

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from benchmarks.fakes.server import make_server, start_serving

__all__ = ["EchoServer", "main"]


@dataclass
class _Session:
    session_id: str
    status: str = "pending"  #: pending → active → completed
    pc: RTCPeerConnection | None = None
    pc_id: str = ""


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class EchoServer:
    """The sessions and the Starlette app; :meth:`close` ends every peer (safe twice)."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.app = Starlette(
            routes=[
                Route("/start", self._start, methods=["POST"]),
                Route("/sessions/{session_id}/api/offer", self._offer, methods=["POST"]),
                Route("/api/sessions/{session_id}", self._get, methods=["GET"]),
                Route("/api/sessions/{session_id}", self._delete, methods=["DELETE"]),
            ]
        )

    async def _start(self, request: Request) -> Response:
        session = _Session(uuid.uuid4().hex)
        self.sessions[session.session_id] = session
        return JSONResponse({"sessionId": session.session_id, "iceConfig": {"iceServers": []}})

    async def _offer(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["session_id"])
        if session is None:
            return _error(404, "unknown_session", "no such session")
        if session.pc is not None:
            return _error(409, "renegotiation", "the echo server negotiates once")
        body = json.loads(await request.body())
        pc = RTCPeerConnection()
        session.pc, session.pc_id, session.status = pc, f"echo-{uuid.uuid4().hex}", "active"

        @pc.on("track")
        def _echo(track: MediaStreamTrack) -> None:
            # Fired inside setRemoteDescription, so the answer already sends the echo.
            if track.kind == "audio":
                pc.addTrack(track)

        @pc.on("datachannel")
        def _channel(channel: RTCDataChannel) -> None:
            channel.on("message", lambda _message: None)

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._end(session)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription
        return JSONResponse({"sdp": answer.sdp, "type": answer.type, "pc_id": session.pc_id})

    async def _get(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["session_id"])
        if session is None:
            return _error(404, "unknown_session", "no such session")
        return JSONResponse({"session_id": session.session_id, "status": session.status})

    async def _delete(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["session_id"])
        if session is None:
            return _error(404, "unknown_session", "no such session")
        await self._end(session)
        return JSONResponse({"session_id": session.session_id, "status": session.status})

    async def _end(self, session: _Session) -> None:
        if session.status == "completed":
            return
        session.status = "completed"
        if session.pc is not None:
            with contextlib.suppress(Exception):
                await session.pc.close()

    async def close(self) -> None:
        await asyncio.gather(*(self._end(s) for s in list(self.sessions.values())))


def _listening_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol
    # says TCP. Without it, every request on a kept-alive connection waits ~40 ms for Nagle's
    # algorithm and the client's delayed ACK — as uvicorn's own sockets never do.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def _serve(host: str, port: int) -> None:
    echo = EchoServer()
    sock = _listening_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = make_server(echo.app, configure_logging=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.handle_exit)
    try:
        task = await start_serving(server, sock)
        print(f"http://{bound_host}:{bound_port}", flush=True)
        await task
    finally:
        await echo.close()
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.echo_server``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.echo_server",
        description="Bare aiortc echo server; prints its base URL when ready.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
