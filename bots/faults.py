"""Faults a bot can inject into itself, so tests can prove the spawner recovers.

Enabled only with ``VOICEBOTS_FAULTS=1``; a call asks for one in its ``request_data`` as
``{"voicebots_fault": "crash" | "hang" | "memory", "after": seconds}``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from loguru import logger

__all__ = ["FAULTS", "inject_fault", "requested_fault"]

FAULTS = ("crash", "hang", "memory")


def requested_fault(request_data: Any) -> tuple[str, float] | None:
    if not isinstance(request_data, dict):
        return None
    fault = request_data.get("voicebots_fault")
    if fault not in FAULTS:
        return None
    after = request_data.get("after", 1.0)
    return str(fault), float(after) if isinstance(after, int | float) else 1.0


async def inject_fault(fault: str, after: float) -> None:
    await asyncio.sleep(after)
    logger.warning(f"injecting fault {fault!r}")
    if fault == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        # Blocks the event loop: no heartbeats, no media — a wedged bot.
        time.sleep(3600)  # noqa: ASYNC251 — blocking is the fault
    elif fault == "memory":
        hoard = []
        while True:  # until the kernel's limit kills the process
            chunk = bytearray(32 * 1024 * 1024)
            for offset in range(0, len(chunk), 4096):
                chunk[offset] = 1
            hoard.append(chunk)
