"""Serve an ASGI app with uvicorn on a socket bound before start-up, so the port is known."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from starlette.types import ASGIApp

__all__ = ["bind_socket", "make_server", "serve_asgi", "start_serving"]

#: In-flight responses get this long to finish when the server stops; then they are cancelled.
GRACEFUL_SHUTDOWN_SECS = 2


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready TCP socket; port 0 lets the kernel pick a free port."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then, and
    # without it each keep-alive reply waits ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def make_server(
    app: ASGIApp, *, log_level: str = "warning", configure_logging: bool, websockets: bool = False
) -> uvicorn.Server:
    """A uvicorn server for ``app`` without lifespan, and without websockets unless asked."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        # The sans-I/O implementation runs on the current ``websockets`` API, not its legacy one.
        ws="websockets-sansio" if websockets else "none",
        log_level=log_level,
        access_log=False,
        # In-process, leave the test runner's logging configuration alone.
        log_config=uvicorn.config.LOGGING_CONFIG if configure_logging else None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECS,
    )
    return uvicorn.Server(config)


async def start_serving(server: uvicorn.Server, sock: socket.socket) -> asyncio.Task[None]:
    """Start ``server`` on ``sock`` and return its task once it accepts connections."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn signals readiness only through its ``started`` flag, so poll it.
    while not server.started:
        if task.done():
            # Start-up failed: surface uvicorn's exception (or its SystemExit).
            task.result()
            raise RuntimeError(f"server on {sock.getsockname()} exited during start-up")
        await asyncio.sleep(0.005)
    return task


@asynccontextmanager
async def serve_asgi(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, websockets: bool = False
) -> AsyncIterator[tuple[str, int]]:
    """Run ``app`` on ``host:port`` for the duration of the block; yields the bound address."""
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    server = make_server(app, configure_logging=False, websockets=websockets)
    try:
        task = await start_serving(server, sock)
        try:
            yield bound_host, bound_port
        finally:
            server.should_exit = True
            await task
    finally:
        sock.close()
