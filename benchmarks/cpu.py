"""CPU per active call: user + system time of the processes serving the calls, over a window.

``calls`` callers speak a long passage at once. Once every call's audio flows (plus a settle
period), the CPU time of the serving processes — one bot per call for voicebots, the single
server process for the bare echo — is read from ``/proc/PID/stat`` at the start and the end of
the window. Per call = Δ CPU / window / calls, in percent of one core.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.caller import Call, CallOptions
from benchmarks.procfs import total_cpu_seconds
from benchmarks.signaling_client import SignalingClient

__all__ = ["CpuResult", "measure_cpu"]

PidsOf = Callable[[set[str]], Awaitable[list[int]]]

#: After every call's audio flows, wait this long before the window opens.
SETTLE_S = 2.0
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class CpuResult:
    calls: int
    window_s: float
    #: % of one core per call, for the serving processes.
    per_call_pct: float
    #: % of one core per call for ``infra_pids`` (voicebots' spawner + signaling), if given.
    infra_per_call_pct: float | None
    #: % of one core per call spent by this process, the callers.
    caller_per_call_pct: float
    pids: int  #: serving processes sampled

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "window_s": round(self.window_s, 2),
            "per_call_pct": round(self.per_call_pct, 2),
            "infra_per_call_pct": None
            if self.infra_per_call_pct is None
            else round(self.infra_per_call_pct, 2),
            "caller_per_call_pct": round(self.caller_per_call_pct, 2),
            "pids": self.pids,
        }


async def _started(calls: Sequence[Call]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while any(call.track.at(0.0) is None for call in calls):
        if time.monotonic() > deadline:
            raise TimeoutError("the calls' audio did not start flowing")
        await asyncio.sleep(0.05)


async def measure_cpu(
    url: str,
    wav: Path,
    calls: int,
    window_s: float,
    pids_of: PidsOf,
    infra_pids: Sequence[int] = (),
) -> CpuResult:
    """Hold ``calls`` calls speaking ``wav`` and sample the CPU of ``pids_of(session_ids)``."""
    options = CallOptions(url=url, wav=wav, max_seconds=window_s + 120.0)
    async with httpx.AsyncClient(timeout=options.http_timeout) as http:
        client = SignalingClient(url, http=http)
        active = [Call(options, client) for _ in range(calls)]
        try:
            await asyncio.gather(*(call.connect() for call in active))
            await _started(active)
            await asyncio.sleep(SETTLE_S)
            pids = await pids_of({call.session_id for call in active})
            if len(pids) == 0:
                raise RuntimeError("no serving process found for the calls")
            me = os.getpid()
            began = time.monotonic()
            before = total_cpu_seconds(pids), total_cpu_seconds(infra_pids)
            caller_before = total_cpu_seconds([me])
            await asyncio.sleep(window_s)
            after = total_cpu_seconds(pids), total_cpu_seconds(infra_pids)
            caller_after = total_cpu_seconds([me])
            elapsed = time.monotonic() - began
        finally:
            await asyncio.gather(*(call.close() for call in active), return_exceptions=True)

    def pct(delta: float) -> float:
        return 100.0 * delta / elapsed / calls

    return CpuResult(
        calls=calls,
        window_s=elapsed,
        per_call_pct=pct(after[0] - before[0]),
        infra_per_call_pct=pct(after[1] - before[1]) if infra_pids else None,
        caller_per_call_pct=pct(caller_after - caller_before),
        pids=len(pids),
    )
