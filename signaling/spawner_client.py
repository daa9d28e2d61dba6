"""Signaling's client of the spawner's internal control API."""

from __future__ import annotations

from typing import Any

import httpx

from media.tracing import inject
from signaling.errors import ApiError
from spawner.control import OWNER_HEADER

__all__ = ["SpawnerClient"]


class SpawnerClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout)

    async def _send(self, method: str, path: str, body: Any, owner: str | None) -> httpx.Response:
        headers = inject()
        if owner is not None:
            headers[OWNER_HEADER] = owner
        try:
            return await self._client.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(
                503,
                "spawner_unavailable",
                f"the bot spawner is unreachable: {exc}",
                retry_after=2.0,
            ) from None

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ApiError(502, "spawner_error", "the bot spawner sent a non-JSON reply") from None

    async def call(
        self, method: str, path: str, body: Any = None, *, owner: str | None = None
    ) -> tuple[int, Any]:
        """One request; returns (status, JSON). Raises 503 ApiError if unreachable.

        The current trace context goes along as ``traceparent``, so the spawner's spans join
        the caller's trace; ``owner``, the requesting API key's owner id, goes along for a
        request on a session, which only that key's sessions answer.
        """
        response = await self._send(method, path, body, owner)
        return response.status_code, self._json(response)

    async def metrics(self) -> str:
        """The spawner's Prometheus text, or an empty string when it is unreachable."""
        try:
            response = await self._client.get("/metrics")
        except httpx.HTTPError:
            return ""
        return response.text if response.status_code == 200 else ""

    async def checked(
        self, method: str, path: str, body: Any = None, *, owner: str | None = None
    ) -> Any:
        """Like :meth:`call`, but a spawner error becomes the same error for the client,
        ``Retry-After`` included."""
        response = await self._send(method, path, body, owner)
        data = self._json(response)
        status = response.status_code
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            try:
                retry_after: float | None = float(response.headers["retry-after"])
            except (KeyError, ValueError):
                retry_after = 2.0 if status == 503 else None
            raise ApiError(
                status,
                str(error.get("code", "spawner_error")),
                str(error.get("message", "")),
                retry_after,
            )
        return data

    async def close(self) -> None:
        await self._client.aclose()
