"""Signaling's client of the spawner's internal control API.

Every offer crosses this hop, on the same cores as the bots answering it, so it is built on
aiohttp's client, whose requests cost several times less CPU than httpx's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from common.contract import OWNER_HEADER
from common.errors import ApiError
from common.tracing import inject

__all__ = ["SpawnerClient"]


@dataclass(frozen=True)
class _Reply:
    """A spawner reply, read whole: status, ``Retry-After`` and the body."""

    status: int
    retry_after: str | None
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise ApiError(502, "spawner_error", "the bot spawner sent a non-JSON reply") from None


class SpawnerClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # Made on first use: an aiohttp session belongs to the running event loop.
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _send(self, method: str, path: str, body: Any, owner: str | None) -> _Reply:
        headers = inject()
        if owner is not None:
            headers[OWNER_HEADER] = owner
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            async with self._client().request(
                method, self._base_url + path, data=data, headers=headers
            ) as response:
                return _Reply(
                    response.status, response.headers.get("Retry-After"), await response.read()
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(
                503,
                "spawner_unavailable",
                f"the bot spawner is unreachable: {exc or type(exc).__name__}",
                retry_after=2.0,
            ) from None

    async def call(
        self, method: str, path: str, body: Any = None, *, owner: str | None = None
    ) -> tuple[int, Any]:
        """One request; returns (status, JSON). Raises 503 ApiError if unreachable.

        The current trace context goes along as ``traceparent``, so the spawner's spans join
        the caller's trace; ``owner``, the requesting API key's owner id, goes along for a
        request on a session, which only that key's sessions answer.
        """
        reply = await self._send(method, path, body, owner)
        return reply.status, reply.json()

    async def metrics(self) -> str:
        """The spawner's Prometheus text, or an empty string when it is unreachable."""
        try:
            reply = await self._send("GET", "/metrics", None, None)
        except ApiError:
            return ""
        return reply.body.decode(errors="replace") if reply.status == 200 else ""

    async def checked(
        self, method: str, path: str, body: Any = None, *, owner: str | None = None
    ) -> Any:
        """Like :meth:`call`, but a spawner error becomes the same error for the client,
        ``Retry-After`` included."""
        reply = await self._send(method, path, body, owner)
        data = reply.json()
        status = reply.status
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            try:
                retry_after: float | None = float(reply.retry_after or "")
            except ValueError:
                retry_after = 2.0 if status == 503 else None
            raise ApiError(
                status,
                str(error.get("code", "spawner_error")),
                str(error.get("message", "")),
                retry_after,
            )
        return data

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
