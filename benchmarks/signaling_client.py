"""Client side of the public signaling contract (README, "HTTP API"), used by the headless caller.

Errors from the server arrive as ``{"error": {"code", "message"}}`` with a 4xx/5xx status and
become :class:`CallError`; a 503 carries its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

__all__ = ["CallError", "SignalingClient", "candidates_from_sdp", "strip_candidates"]

log = logging.getLogger(__name__)


class CallError(Exception):
    """Signaling refused a request, or gave no reply (``status`` 0)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, code, message, retry_after)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after  #: seconds, from ``Retry-After`` (503 when full)

    def __str__(self) -> str:
        retry = "" if self.retry_after is None else f" (retry after {self.retry_after:g} s)"
        return f"{self.status} {self.code}: {self.message}{retry}"

    @classmethod
    def from_response(cls, response: httpx.Response) -> CallError:
        """The ``{"error": {"code", "message"}}`` body of a 4xx/5xx, or what there is."""
        return cls.from_reply(
            response.status_code, response.content, response.headers.get("retry-after")
        )

    @classmethod
    def from_reply(cls, status: int, content: bytes, retry_after: str | None) -> CallError:
        """A 4xx/5xx from its status, body and ``Retry-After``, whatever HTTP client read it."""
        code, message = f"http_{status}", content.decode(errors="replace")[:200]
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = str(body["error"].get("code") or code)
            message = str(body["error"].get("message") or "")
        try:
            seconds = None if retry_after is None else float(retry_after)
        except ValueError:  # an HTTP-date (signaling sends seconds)
            seconds = None
        return cls(status, code, message, seconds)


class SignalingClient:
    """The public HTTP contract of signaling, client side.

    Owns its ``httpx.AsyncClient`` unless one is passed in (a benchmark may share one):
    use ``async with`` or :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._owned = http is None
        self._http = http or httpx.AsyncClient(headers=dict(headers or {}), timeout=timeout)

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP client if this object created it; safe twice."""
        if self._owned:
            await self._http.aclose()

    async def start(self, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``POST /start`` → ``{sessionId, iceConfig: {iceServers}}``."""
        return await self._object("POST", "/start", {"body": dict(body or {})})

    async def offer(
        self, session_id: str, sdp: str, *, pc_id: str | None = None, restart_pc: bool = False
    ) -> dict[str, Any]:
        """``POST /sessions/{id}/api/offer`` → ``{sdp, type: "answer", pc_id}``."""
        # The JS transport always sends pc_id (null at first) and restart_pc.
        body = {"sdp": sdp, "type": "offer", "pc_id": pc_id, "restart_pc": restart_pc}
        return await self._object("POST", f"/sessions/{session_id}/api/offer", body)

    async def patch_candidates(
        self, session_id: str, pc_id: str, candidates: Sequence[Mapping[str, Any]]
    ) -> None:
        """Trickle ICE: ``PATCH /sessions/{id}/api/offer`` (see :func:`candidates_from_sdp`)."""
        body = {"pc_id": pc_id, "candidates": [dict(c) for c in candidates]}
        await self._request("PATCH", f"/sessions/{session_id}/api/offer", body)

    async def hangup(self, session_id: str) -> None:
        """``DELETE /api/sessions/{id}``."""
        await self._request("DELETE", f"/api/sessions/{session_id}")

    async def session(self, session_id: str) -> dict[str, Any]:
        """``GET /api/sessions/{id}``: status, timings, transcript."""
        return await self._object("GET", f"/api/sessions/{session_id}")

    async def wait_ended(
        self, session_id: str, max_wait: float = 10.0, interval: float = 0.1
    ) -> dict[str, Any]:
        """Poll the session until its status is not "active"; the last reply (``{}`` if none)."""
        deadline = time.monotonic() + max_wait
        last: dict[str, Any] = {}
        while True:
            try:
                last = await self.session(session_id)
            except CallError as exc:
                if exc.status == 404:  # nothing to wait for
                    return last
                log.debug("session %s: %s", session_id, exc)
            if last and last.get("status") != "active":
                return last
            if time.monotonic() >= deadline:
                return last
            await asyncio.sleep(interval)

    async def _object(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        reply = await self._request(method, path, body)
        if not isinstance(reply, dict):
            raise CallError(0, "bad_reply", f"{method} {path}: expected a JSON object")
        return reply

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = await self._http.request(method, self.url + path, json=body)
        except httpx.HTTPError as exc:
            raise CallError(0, "unreachable", f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 400:
            raise CallError.from_response(response)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise CallError(
                response.status_code, "bad_reply", f"{method} {path}: not JSON"
            ) from None


def candidates_from_sdp(sdp: str) -> list[dict[str, Any]]:
    """The ``a=candidate`` lines of an SDP as trickle items, the way browsers send them.

    Each candidate appears once, with the mid and m-line index of the first section carrying
    it (with BUNDLE every section repeats the same candidates).
    """
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    sections = sdp.replace("\r\n", "\n").split("\nm=")[1:]
    for index, section in enumerate(sections):
        lines = section.split("\n")
        mid = next((ln[len("a=mid:") :] for ln in lines if ln.startswith("a=mid:")), str(index))
        for line in lines:
            if line.startswith("a=candidate:") and line[2:] not in seen:
                seen.add(line[2:])
                items.append({"candidate": line[2:], "sdp_mid": mid, "sdp_mline_index": index})
    return items


def strip_candidates(sdp: str) -> str:
    """The SDP without candidates, as a browser's offer looks before gathering completes."""
    lines = sdp.split("\r\n")
    kept = [ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
    return "\r\n".join(kept)
