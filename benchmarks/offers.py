"""Offer → answer latency for a burst of simultaneous calls.

A burst runs in four steps, so that the caller's own work never lands inside a timed request:

1. every call does ``POST /start`` and builds its offer (aiortc gathers its candidates);
2. all offers are posted at once; each is timed from just before its request until its
   answer is parsed — this is the measurement;
3. the answers are applied and the calls connect (ICE, DTLS), as real clients would;
4. every call hangs up.

The load generator shares the machine's cores with the server it measures, so what it spends
on each request is taken from the server. Steps 1 and 2 go through one aiohttp session, whose
keep-alive connections the ``/start`` requests open, so no TCP handshake is timed, and whose
requests cost the client several times less CPU than httpx's (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import numpy as np
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from benchmarks.signaling_client import CallError, SignalingClient
from media.tracks import WavTrack

__all__ = ["BurstResult", "run_burst"]

#: A peer that has not connected by then counts as not connected (the answer was still timed).
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BurstResult:
    size: int
    answers_ms: tuple[float, ...]  #: one per answered offer
    failures: tuple[str, ...]  #: why the others were not answered
    connected: int  #: calls whose peer connection reached "connected"


@dataclass
class _Leg:
    session_id: str
    pc: RTCPeerConnection
    sdp: str
    answer: dict[str, object] | None = None


_JSON = {"Content-Type": "application/json"}


async def _post(lean: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a JSON body; the JSON object replied, or :class:`CallError` as the signaling
    client raises it."""
    async with lean.post(url, data=json.dumps(body).encode(), headers=_JSON) as response:
        payload = await response.read()
    if response.status >= 400:
        raise CallError.from_reply(response.status, payload, response.headers.get("Retry-After"))
    try:
        reply = json.loads(payload)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise CallError(response.status, "bad_reply", f"POST {url}: expected a JSON object")
    return reply


async def _prepare(lean: aiohttp.ClientSession, url: str) -> _Leg:
    session_id = str((await _post(lean, f"{url}/start", {"body": {}}))["sessionId"])
    pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    # The same offer as the headless caller's: one sendrecv audio track and a data channel.
    pc.addTransceiver(WavTrack(np.zeros(960, np.int16)), direction="sendrecv")
    pc.createDataChannel("chat", ordered=True)
    await pc.setLocalDescription(await pc.createOffer())
    return _Leg(session_id, pc, pc.localDescription.sdp)


async def _offer(lean: aiohttp.ClientSession, url: str, leg: _Leg) -> float:
    # The body the pipecat JS transport sends.
    body = {"sdp": leg.sdp, "type": "offer", "pc_id": None, "restart_pc": False}
    started = time.perf_counter()
    leg.answer = await _post(lean, f"{url}/sessions/{leg.session_id}/api/offer", body)
    return (time.perf_counter() - started) * 1000


async def _connect(leg: _Leg) -> bool:
    if leg.answer is None:
        return False
    answer = RTCSessionDescription(sdp=str(leg.answer["sdp"]), type="answer")
    await leg.pc.setRemoteDescription(answer)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while leg.pc.connectionState != "connected":
        if leg.pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _hang_up(client: SignalingClient, leg: _Leg) -> None:
    with contextlib.suppress(CallError):
        await client.hangup(leg.session_id)
    with contextlib.suppress(Exception):
        await leg.pc.close()


async def run_burst(url: str, size: int, http: httpx.AsyncClient) -> BurstResult:
    """``size`` simultaneous offers to the signaling at ``url``; see the module docstring."""
    client = SignalingClient(url, http=http)
    url = client.url
    # No limit on connections: each offer of the burst has its own, opened by its /start.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
    ) as lean:
        legs = list(await asyncio.gather(*(_prepare(lean, url) for _ in range(size))))
        timed = await asyncio.gather(
            *(_offer(lean, url, leg) for leg in legs), return_exceptions=True
        )
    answers = tuple(t for t in timed if isinstance(t, float))
    failures = tuple(str(t) for t in timed if isinstance(t, BaseException))
    try:
        connected = await asyncio.gather(*(_connect(leg) for leg in legs), return_exceptions=True)
    finally:
        await asyncio.gather(*(_hang_up(client, leg) for leg in legs))
    return BurstResult(size, answers, failures, sum(1 for c in connected if c is True))
