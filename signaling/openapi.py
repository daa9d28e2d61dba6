"""The OpenAPI 3.0 description of the public API, served at ``GET /openapi.json``.

Written by hand next to the handlers (the app has no schema layer to generate it from) and
checked against the running server by the schemathesis test, which fails on any reply the
document does not describe.
"""

from __future__ import annotations

import functools
from typing import Any

from common.contract import MAX_CANDIDATES, MAX_ID_CHARS, MAX_SDP_BYTES

__all__ = ["SESSION_ID_PATTERN", "openapi_document"]

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

_ANY: dict[str, Any] = {}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_ERRORS = {
    400: "malformed request (the message says what is wrong)",
    401: "missing, invalid or expired credential",
    403: "the page's origin may not call this API (CORS)",
    404: "no such session, peer connection or path",
    405: "method not allowed",
    409: "the session has ended, or already has a peer connection",
    413: "body larger than 256 KiB",
    415: "body is not application/json",
    429: "rate limit, or the API key's cap of concurrent calls (see Retry-After)",
    502: "the bot failed",
    503: "no free bot, the server is draining, or a backend is unreachable (see Retry-After)",
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {"description": _ERRORS[code], "content": _json(_ref("Error"))} for code in codes
    }


def _operation(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    optional_body: bool = False,
    auth: str | None = None,
    session: bool = False,
    required: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**ok, **_errors(*errors)}}
    if body is not None:
        operation["requestBody"] = {"required": not optional_body, "content": _json(_ref(body))}
    if session:
        operation["parameters"] = [
            {
                "name": "session_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": SESSION_ID_PATTERN},
            }
        ]
    # Without API keys (the open local demo) credentials are optional: {} is "none".
    anonymous: list[dict[str, Any]] = [] if required else [{}]
    if auth == "key":
        operation["security"] = [{"apiKey": []}, *anonymous]
    elif auth == "session":
        operation["security"] = [{"apiKey": []}, {"sessionToken": []}, *anonymous]
    elif auth == "metrics":
        operation["security"] = [{"apiKey": []}, {"metricsToken": []}, *anonymous]
    return operation


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": _json(_ref(schema))}}


_OFFER_ERRORS = (400, 401, 403, 404, 405, 409, 413, 415, 429, 502, 503)
_SESSION_ERRORS = (400, 401, 403, 404, 405, 502, 503)

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "StartRequest": {
        "type": "object",
        "description": "`body` (or `requestData`) is handed to the bot as its request data.",
        "properties": {"body": _ANY, "requestData": _ANY},
    },
    "IceServer": {
        "type": "object",
        "required": ["urls"],
        "properties": {
            "urls": {"type": "string"},
            "username": {"type": "string"},
            "credential": {"type": "string"},
        },
    },
    "IceConfig": {
        "type": "object",
        "required": ["iceServers"],
        "properties": {"iceServers": {"type": "array", "items": _ref("IceServer")}},
    },
    "StartResponse": {
        "type": "object",
        "required": ["sessionId", "iceConfig"],
        "properties": {
            "sessionId": {"type": "string"},
            "iceConfig": _ref("IceConfig"),
            "token": {
                "type": "string",
                "description": "Session token for this session's page (only with API keys).",
            },
            "tokenExpiresAt": {"type": "integer", "description": "unix seconds"},
        },
    },
    "Offer": {
        "type": "object",
        "required": ["sdp"],
        "properties": {
            "sdp": {
                "type": "string",
                "maxLength": MAX_SDP_BYTES,
                "description": "An SDP offer: an audio m-line with a=ice-ufrag, a=ice-pwd "
                "and a=fingerprint.",
            },
            "type": {"type": "string", "enum": ["offer"]},
            "pc_id": {"type": "string", "nullable": True, "maxLength": MAX_ID_CHARS},
            "restart_pc": {"type": "boolean", "nullable": True},
            "request_data": _ANY,
            "requestData": _ANY,
        },
    },
    "Answer": {
        "type": "object",
        "required": ["sdp", "type", "pc_id"],
        "properties": {
            "sdp": {"type": "string"},
            "type": {"type": "string", "enum": ["answer"]},
            "pc_id": {"type": "string"},
        },
    },
    "Candidates": {
        "type": "object",
        "required": ["pc_id", "candidates"],
        "properties": {
            "pc_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
            "candidates": {
                "type": "array",
                "maxItems": MAX_CANDIDATES,
                "items": {
                    "type": "object",
                    "properties": {
                        "candidate": {"type": "string", "maxLength": 1024},
                        "sdp_mid": {"type": "string", "nullable": True},
                        "sdp_mline_index": {
                            "type": "integer",
                            "nullable": True,
                            "minimum": 0,
                            "maximum": 1023,
                        },
                    },
                },
            },
        },
    },
    "Success": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["success"]}},
    },
    "Session": {
        "type": "object",
        "required": ["session_id", "status"],
        "description": "Live status and transcript, or the stored record of an ended call.",
        "properties": {
            "session_id": {"type": "string"},
            "status": {"type": "string"},
            "transcript": {"type": "array"},
            "iceConfig": _ref("IceConfig"),
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
}


def _readyz() -> dict[str, Any]:
    operation = _operation("Readiness", _ok("ready", "Health"), (405, 502))
    operation["responses"]["503"] = {
        "description": "draining or full (a Health body), or the spawner is unreachable",
        "content": _json({"anyOf": [_ref("Health"), _ref("Error")]}),
    }
    return operation


def openapi_document(auth_required: bool = True, metrics_guarded: bool = True) -> dict[str, Any]:
    """The whole document, as a JSON-ready dict; credentials are optional in it when the
    server runs without API keys (and, for ``/metrics``, without a metrics token)."""
    guarded = functools.partial(_operation, required=auth_required)
    start = guarded(
        "Create a session; with API keys, also a session token for its page",
        _ok("the session", "StartResponse"),
        (400, 401, 403, 405, 413, 415, 429, 503),
        body="StartRequest",
        optional_body=True,
        auth="key",
    )
    offer = _ok("the SDP answer", "Answer")
    patched = _ok("candidates added", "Success")
    session = _ok("the session", "Session")
    text = {"200": {"description": "Prometheus text", "content": {"text/plain": {}}}}
    document = {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "voicebots signaling",
            "version": "1",
            "description": "Sessions, SDP offer/answer and trickle ICE for voice bots; "
            "compatible with @pipecat-ai/small-webrtc-transport.",
        },
        "paths": {
            "/start": {"post": start},
            "/api/offer": {
                "post": guarded(
                    "Offer, creating a session", offer, _OFFER_ERRORS, body="Offer", auth="key"
                ),
                "patch": guarded(
                    "Trickle ICE candidates", patched, _OFFER_ERRORS, body="Candidates", auth="key"
                ),
            },
            "/sessions/{session_id}/api/offer": {
                "post": guarded(
                    "Offer (or renegotiate) for a session",
                    offer,
                    _OFFER_ERRORS,
                    body="Offer",
                    auth="session",
                    session=True,
                ),
                "patch": guarded(
                    "Trickle ICE candidates of a session",
                    patched,
                    _OFFER_ERRORS,
                    body="Candidates",
                    auth="session",
                    session=True,
                ),
            },
            "/api/sessions/{session_id}": {
                "get": guarded(
                    "Status and transcript", session, _SESSION_ERRORS, auth="session", session=True
                ),
                "delete": guarded(
                    "Hang up", session, _SESSION_ERRORS, auth="session", session=True
                ),
            },
            "/healthz": {"get": _operation("Liveness", _ok("alive", "Health"), (405,))},
            "/readyz": {"get": _readyz()},
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics",
                    text,
                    (401, 405),
                    auth="metrics",
                    required=metrics_guarded,
                )
            },
            "/openapi.json": {"get": _operation("This document", document, (405,))},
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "an API key"},
                "sessionToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "vbs1 session token from POST /start",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "VOICEBOTS_METRICS_TOKEN",
                },
            },
        },
    }
