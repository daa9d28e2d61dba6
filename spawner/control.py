"""The spawner's internal control API (HTTP + JSON), called by signaling only.

POST   /sessions                 {request_data?, owner?} → 201 {session_id}
POST   /sessions/{id}/offer      offer                  → {sdp, type, pc_id, session_id}
POST   /offer                    offer + owner? (new session) → {sdp, type, pc_id, session_id}
PATCH  /candidates               {pc_id, candidates, session_id?} → {status}
GET    /sessions/{id}            live session, or 404
DELETE /sessions/{id}            hang up; the final record, or 404
GET    /status                   pool and call counts
GET    /metrics                  Prometheus text

A request made with an API key carries that key's opaque owner id: in the body of the
requests that create a session, in the ``Voicebots-Owner`` header of those that act on one,
which then answer 404 for a session another key started.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.contract import OWNER_HEADER, CandidatesRequest, OfferRequest
from common.errors import error_response
from common.tracing import extract
from spawner.calls import CallManager
from spawner.exceptions import CallError
from spawner.metrics import SpawnerMetrics
from spawner.pool import Pool

__all__ = ["build_control_app"]

#: Header with the opaque owner id of the API key a session-scoped request was made with.

Endpoint = Callable[[Request], Awaitable[Response]]


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None


def _owner(body: Any) -> str | None:
    """The opaque owner id signaling passes (a hash of the caller's API key, never the key)."""
    owner = body.get("owner") if isinstance(body, dict) else None
    return _checked_owner(owner)


def _acting(request: Request) -> str | None:
    """The owner id of the API key a session-scoped request was made with, if any."""
    return _checked_owner(request.headers.get(OWNER_HEADER))


def _checked_owner(owner: Any) -> str | None:
    if owner is not None and (not isinstance(owner, str) or not 0 < len(owner) <= 64):
        raise ValueError("'owner' must be a string of 1 to 64 characters")
    return owner


def _guard(endpoint: Endpoint) -> Endpoint:
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ValueError as exc:
            return error_response(400, "bad_request", str(exc))
        except CallError as exc:
            return exc.response()

    return wrapped


def build_control_app(calls: CallManager, pool: Pool, metrics: SpawnerMetrics) -> Starlette:
    tracer = trace.get_tracer("voicebots.spawner")

    @_guard
    async def create_session(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        session = calls.create(body.get("request_data"), owner=_owner(body))
        return JSONResponse({"session_id": session.session_id}, status_code=201)

    @_guard
    async def offer(request: Request) -> Response:
        body = await _json_body(request)
        parsed = OfferRequest.parse(body)
        session_id = request.path_params.get("session_id")
        owner = _owner(body) if session_id is None else _acting(request)
        parent = extract(request.headers)
        with tracer.start_as_current_span(
            "assign", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            answer = await calls.offer(session_id, parsed, owner)
            span.set_attribute("voicebots.session_id", answer["session_id"])
            span.set_attribute("voicebots.pc_id", answer["pc_id"])
        return JSONResponse(answer)

    @_guard
    async def candidates(request: Request) -> Response:
        body = await _json_body(request)
        parsed = CandidatesRequest.parse(body)
        session_id = body.get("session_id") if isinstance(body, dict) else None
        await calls.candidates(
            session_id if isinstance(session_id, str) else None, parsed, _acting(request)
        )
        return JSONResponse({"status": "success"})

    @_guard
    async def get_session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        found = calls.get(session_id, _acting(request))
        if found is None:
            return error_response(404, "unknown_session", f"no live session {session_id}")
        return JSONResponse(found)

    @_guard
    async def delete_session(request: Request) -> Response:
        session_id = request.path_params["session_id"]
        found = await calls.hangup(session_id, acting=_acting(request))
        if found is None:
            return error_response(404, "unknown_session", f"no live session {session_id}")
        return JSONResponse(found)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def status(request: Request) -> Response:
        return JSONResponse(
            {
                "pool": pool.status(),
                "active_calls": len(calls.live_calls()),
                "sessions": len(calls.sessions),
                "calls": [
                    {
                        "session_id": s.session_id,
                        "bot_pid": s.bot.pid if s.bot else None,
                        "connected": s.connected_at is not None,
                        "lines": len(s.lines),
                    }
                    for s in calls.live_calls()
                ],
                "ended_by_reason": calls.ended_by_reason,
            }
        )

    return Starlette(
        routes=[
            Route("/sessions", create_session, methods=["POST"]),
            Route("/sessions/{session_id}/offer", offer, methods=["POST"]),
            Route("/offer", offer, methods=["POST"]),
            Route("/candidates", candidates, methods=["PATCH"]),
            Route("/sessions/{session_id}", get_session, methods=["GET"]),
            Route("/sessions/{session_id}", delete_session, methods=["DELETE"]),
            Route("/status", status, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ]
    )
