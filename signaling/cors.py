"""Which web pages may call the API from a browser (CORS), as an ASGI middleware.

A request without ``Origin`` (a server, curl) or from the page signaling serves itself passes
untouched. A browser request from an origin in ``VOICEBOTS_ALLOWED_ORIGINS`` (or from any
origin when that is ``*``) gets the ``Access-Control-Allow-*`` headers, and its preflight a
204. Any other origin is refused with a JSON 403 before the request reaches a handler: the
browser would hide the reply from that page anyway, and this way the request has no effect
either.

Credentials are bearer headers, never cookies, so ``Access-Control-Allow-Credentials`` is
never sent: a page from an allowed origin still needs a token to do anything.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import error_response

__all__ = ["CorsMiddleware"]

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
EXPOSE_HEADERS = "Retry-After, WWW-Authenticate"
MAX_AGE = "600"


class CorsMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...]) -> None:
        self.app = app
        self.allow_any = "*" in allowed_origins
        self.allowed = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None or _same_origin(origin, headers.get("host")):
            await self.app(scope, receive, send)
            return
        allowed = self.allow_any or origin.lower() in self.allowed
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        response: Response
        if not allowed:
            response = error_response(
                403, "origin_not_allowed", f"pages from {origin[:200]} may not call this API"
            )
        elif preflight:
            response = Response(status_code=204, headers=self._preflight_headers(origin))
        else:
            await self.app(scope, receive, self._with_cors_headers(origin, send))
            return
        await response(scope, receive, send)

    def _allow_origin(self, origin: str) -> str:
        return "*" if self.allow_any else origin

    def _preflight_headers(self, origin: str) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": self._allow_origin(origin),
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        }

    def _with_cors_headers(self, origin: str, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Access-Control-Allow-Origin"] = self._allow_origin(origin)
                headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
                headers.add_vary_header("Origin")
            await send(message)

        return sending


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` is the host this request was sent to (the page signaling serves).

    Only the host and port are compared: behind a TLS-terminating proxy the page is https
    while signaling itself speaks http.
    """
    if not host:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.lower()
