"""The public signaling service: sessions, SDP offer/answer, trickle ICE, the page.

It holds no media and no call state of its own: live state is the spawner's, ended calls
are in Redis. Restarting it does not touch a live call.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from loguru import logger
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from common.contract import CandidatesRequest, OfferRequest
from common.errors import ApiError, error_response
from common.record import CallRecord, call_key
from signaling.auth import Authenticator
from signaling.bodies import read_json
from signaling.config import SignalingConfig
from signaling.cors import CorsMiddleware
from signaling.openapi import SESSION_ID_PATTERN, openapi_document
from signaling.ratelimit import RateLimiter, client_address
from signaling.spawner_client import SpawnerClient

__all__ = ["build_app"]

Endpoint = Callable[[Request], Awaitable[Response]]


_tracer = trace.get_tracer("voicebots.signaling")


def _guard(endpoint: Endpoint, rejected: Counter | None = None) -> Endpoint:
    """Turns parse errors and API errors into JSON 4xx/5xx replies, inside a server span."""

    async def wrapped(request: Request) -> Response:
        route = request.scope.get("route")
        name = f"{request.method} {getattr(route, 'path', request.url.path)}"
        with _tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER) as span:
            try:
                response = await endpoint(request)
            except ValueError as exc:
                response, code = error_response(400, "bad_request", str(exc)), "bad_request"
            except ApiError as exc:
                response, code = exc.response(), exc.code
            else:
                code = ""
            span.set_attribute("http.response.status_code", response.status_code)
            if code and rejected is not None:
                rejected.labels(code).inc()
            return response

    wrapped.__name__ = endpoint.__name__
    return wrapped


_SESSION_ID = re.compile(SESSION_ID_PATTERN.strip("^$"))


def _session_id(request: Request) -> str | None:
    """The path's session id, if the route has one; ids are the spawner's, so anything else
    is refused here rather than put into a URL towards it."""
    session_id = request.path_params.get("session_id")
    if session_id is not None and not _SESSION_ID.fullmatch(session_id):
        raise ValueError("malformed session id: expected 1 to 64 letters, digits, '-' or '_'")
    return session_id


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no route, wrong method), in the API's JSON shape."""
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail, headers=exc.headers
    )


def build_app(config: SignalingConfig) -> Starlette:
    security = config.security
    spawner = SpawnerClient(config.spawner_url)
    store = aioredis.Redis.from_url(config.redis_url, decode_responses=True)
    auth = Authenticator(security)
    limiter = (
        RateLimiter(security.rate_limit, security.rate_burst) if security.rate_limit > 0 else None
    )
    registry = CollectorRegistry(auto_describe=True)
    offers_rejected = Counter(
        "voicebots_signaling_offers_rejected",
        "Offers (and trickle ICE) answered with an error at the public edge, by reason.",
        ["reason"],
        registry=registry,
    )
    openapi = openapi_document(
        auth_required=security.auth_enabled,
        metrics_guarded=security.auth_enabled or bool(security.metrics_token),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        logger.info(
            f"signaling on http://{config.host}:{config.port}, spawner {config.spawner_url}"
        )
        if security.auth_enabled:
            logger.info(security.describe())
        else:
            logger.warning(security.describe())
        yield
        await spawner.close()
        await store.aclose()

    def throttle(request: Request) -> None:
        """Counts a costly request against its client's rate limit (before auth, so that
        guessing keys is limited too)."""
        if limiter is None:
            return
        wait = limiter.take(client_address(request, security.trust_proxy))
        if wait is not None:
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests from this client; retry in {max(1, round(wait))} s",
                retry_after=wait,
            )

    async def stored_record(session_id: str, owner: str | None) -> CallRecord | None:
        """The ended call's record; ``None`` if there is none, or if ``owner`` (the
        requesting API key's) is not the key that started it."""
        try:
            data = await store.hgetall(call_key(session_id))
        except redis.RedisError as exc:
            raise ApiError(503, "store_unavailable", f"call store unreachable: {exc}") from None
        if not data or (owner is not None and data.get("owner") != owner):
            return None
        return CallRecord.from_hash(session_id, data)

    @_guard
    async def start(request: Request) -> Response:
        throttle(request)
        owner = auth.require_key(request)
        body = await read_json(request, config.max_body_bytes, optional=True)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        payload = {"request_data": body.get("body", body.get("requestData")), "owner": owner}
        created = await spawner.checked("POST", "/sessions", payload)
        session_id = str(created["session_id"])
        return JSONResponse(
            {
                "sessionId": session_id,
                "iceConfig": config.media.ice_config(session_id),
                **auth.issue(session_id),
            }
        )

    def authorize(request: Request) -> tuple[str | None, str | None]:
        """(session id, owner): a session route takes its session's token or the key that
        started it; the implicit-session routes take a key, whose owner the new session
        gets. ``owner`` is the key's opaque id (``None`` for a token or with auth off)."""
        session_id = _session_id(request)
        if session_id is None:
            return None, auth.require_key(request)
        return session_id, auth.require_session(request, session_id)

    def authorized_session(request: Request) -> tuple[str, str | None]:
        session_id, owner = authorize(request)
        assert session_id is not None, "a route with a {session_id}"
        return session_id, owner

    async def _offer(request: Request) -> Response:
        throttle(request)
        session_id, owner = authorize(request)
        parsed = OfferRequest.parse(await read_json(request, config.max_body_bytes))
        if session_id:
            answer = await spawner.checked(
                "POST", f"/sessions/{session_id}/offer", parsed.to_json(), owner=owner
            )
        else:
            answer = await spawner.checked("POST", "/offer", {**parsed.to_json(), "owner": owner})
        return JSONResponse(
            {"sdp": answer["sdp"], "type": answer["type"], "pc_id": answer["pc_id"]}
        )

    async def _candidates(request: Request) -> Response:
        session_id, owner = authorize(request)
        parsed = CandidatesRequest.parse(await read_json(request, config.max_body_bytes))
        payload: dict[str, Any] = parsed.to_json()
        if session_id:
            payload["session_id"] = session_id
        await spawner.checked("PATCH", "/candidates", payload, owner=owner)
        return JSONResponse({"status": "success"})

    @_guard
    async def get_session(request: Request) -> Response:
        session_id, owner = authorized_session(request)
        status, data = await spawner.call("GET", f"/sessions/{session_id}", owner=owner)
        if status == 200:
            # A page handed only {session id, token} learns its ICE servers here.
            return JSONResponse({**data, "iceConfig": config.media.ice_config(session_id)})
        record = await stored_record(session_id, owner)
        if record is None:
            raise ApiError(404, "unknown_session", f"no session {session_id}")
        return JSONResponse(record.to_json())

    @_guard
    async def delete_session(request: Request) -> Response:
        session_id, owner = authorized_session(request)
        status, data = await spawner.call("DELETE", f"/sessions/{session_id}", owner=owner)
        if status == 200:
            return JSONResponse(data)
        # Hanging up an ended call is not an error: answer with what it left.
        record = await stored_record(session_id, owner)
        if record is None:
            raise ApiError(404, "unknown_session", f"no session {session_id}")
        return JSONResponse(record.to_json())

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @_guard
    async def readyz(_request: Request) -> Response:
        status = await spawner.checked("GET", "/status")
        pool = status["pool"]
        room = pool["idle"] > 0 or pool["busy"] + pool["starting"] < pool["max_bots"]
        ready = bool(pool["accepting"]) and room
        reason = "ok" if ready else ("draining" if not pool["accepting"] else "full")
        return JSONResponse(
            {"status": reason, "pool": pool, "active_calls": status["active_calls"]},
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "2"},
        )

    async def index(_request: Request) -> Response:
        page = Path(config.web_dir) / "index.html"
        if not page.is_file():
            return error_response(404, "no_page", f"no page at {page}")
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def metrics(request: Request) -> Response:
        try:
            auth.require_scraper(request)
        except ApiError as exc:
            return exc.response()
        # Pool and call metrics live in the spawner; one scrape here returns both.
        text = generate_latest(registry).decode() + await spawner.metrics()
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(_request: Request) -> Response:
        return JSONResponse(openapi)

    offer = _guard(_offer, offers_rejected)
    candidates = _guard(_candidates, offers_rejected)

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/start", start, methods=["POST"]),
        Route("/api/offer", offer, methods=["POST"]),
        Route("/api/offer", candidates, methods=["PATCH"]),
        Route("/sessions/{session_id}/api/offer", offer, methods=["POST"]),
        Route("/sessions/{session_id}/api/offer", candidates, methods=["PATCH"]),
        Route("/api/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/api/sessions/{session_id}", delete_session, methods=["DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    if Path(config.web_dir).is_dir():
        routes.append(Mount("/static", StaticFiles(directory=config.web_dir), name="static"))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(CorsMiddleware, allowed_origins=security.allowed_origins)],
        exception_handlers={HTTPException: _http_error},
    )
