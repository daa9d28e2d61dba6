"""Who may call the public API: API keys for servers, session tokens for pages.

A customer's backend calls ``POST /start`` with ``Authorization: Bearer <API key>`` and gets
back, with the session id, a session token: ``vbs1.<payload>.<mac>``, where the payload is
base64url JSON ``{"sid": session id, "exp": unix seconds}`` and the MAC is HMAC-SHA256 of
``vbs1.<payload>`` under the token secret. It hands both to its page, which uses the token as
its bearer credential for that one session's offer, trickle ICE, status and hang-up — and
for nothing else, and not after ``exp``. Tokens are stateless: any signaling replica that
shares the secret checks them, and a restart does not invalidate them.

The spawner never sees a key: a call's owner is :func:`owner_id` of the key that started it,
which is what the per-key call cap counts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable

from starlette.requests import Request

from common.errors import ApiError
from signaling.config import SecurityConfig

__all__ = ["Authenticator", "SessionTokens", "TokenError", "owner_id"]

_PREFIX = "vbs1"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="voicebots"'}


class TokenError(ValueError):
    """A session token is malformed, forged, expired or for another session."""


def owner_id(key: str) -> str:
    """The opaque id of an API key that the spawner keys its call counts by."""
    return hashlib.sha256(b"voicebots owner\0" + key.encode()).hexdigest()[:24]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionTokens:
    """Issues and checks session tokens (see the module docstring for the format)."""

    def __init__(self, secret: bytes, ttl: float, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("session tokens need a secret")
        self._secret = secret
        self._ttl = ttl
        self._clock = clock

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self._secret, signed.encode(), hashlib.sha256).digest()

    def issue(self, session_id: str) -> tuple[str, int]:
        """A token for ``session_id`` and its expiry (unix seconds)."""
        expires = int(self._clock() + self._ttl)
        payload = json.dumps({"sid": session_id, "exp": expires}, separators=(",", ":"))
        signed = f"{_PREFIX}.{_b64encode(payload.encode())}"
        return f"{signed}.{_b64encode(self._mac(signed))}", expires

    def verify(self, token: str, session_id: str) -> None:
        """Raises :class:`TokenError` unless ``token`` is valid now for ``session_id``."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise TokenError("invalid API key or session token")
        signed = f"{parts[0]}.{parts[1]}"
        # The MAC is checked before the payload is even parsed: a forged token learns nothing.
        # It is compared as issued, in text: base64 decoding would also accept other spellings
        # of the same bytes (the last character's unused low bits), so other tokens.
        expected = _b64encode(self._mac(signed)).encode()
        if not hmac.compare_digest(parts[2].encode(errors="replace"), expected):
            raise TokenError("invalid API key or session token")
        try:
            payload = json.loads(_b64decode(parts[1]))
        except (binascii.Error, ValueError):
            raise TokenError("invalid API key or session token") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
            raise TokenError("invalid API key or session token")
        if payload["exp"] <= self._clock():
            raise TokenError("session token has expired; ask your server for a new session")
        if payload.get("sid") != session_id:
            raise TokenError("session token is for another session")


class Authenticator:
    """Checks the bearer credential of a request, before anything else is done with it."""

    def __init__(self, config: SecurityConfig, clock: Callable[[], float] = time.time) -> None:
        self.enabled = config.auth_enabled
        # Keys are compared by digest, so the comparison's time says nothing about a key.
        self._owners = {
            hashlib.sha256(key.encode()).digest(): owner_id(key) for key in config.api_keys
        }
        self.tokens = (
            SessionTokens(config.token_secret, config.token_ttl, clock) if self.enabled else None
        )
        self._metrics_token = (
            hashlib.sha256(config.metrics_token.encode()).digest() if config.metrics_token else None
        )

    def _bearer(self, request: Request, wanted: str) -> str:
        header = request.headers.get("authorization")
        if header is None:
            raise _unauthorized(f"this request needs 'Authorization: Bearer <{wanted}>'")
        scheme, _, credential = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <credential>'")
        return credential.strip()

    def _owner(self, credential: str) -> str | None:
        digest = hashlib.sha256(credential.encode(errors="replace")).digest()
        found = None
        for known, owner in self._owners.items():
            if hmac.compare_digest(digest, known):
                found = owner
        return found

    def require_key(self, request: Request) -> str | None:
        """The owner id of the request's API key; ``None`` when auth is off."""
        if not self.enabled:
            return None
        credential = self._bearer(request, "API key")
        owner = self._owner(credential)
        if owner is None:
            if credential.startswith(f"{_PREFIX}."):
                raise _unauthorized("a session token cannot do this; use an API key")
            raise _unauthorized("invalid API key")
        return owner

    def require_session(self, request: Request, session_id: str) -> str | None:
        """Passes an API key, or a valid session token for ``session_id``.

        Returns the key's owner id, which the session must have (``None`` for a token, which
        is bound to its session already, and when auth is off).
        """
        if self.tokens is None:
            return None
        credential = self._bearer(request, "API key or session token")
        owner = self._owner(credential)
        if owner is not None:
            return owner
        try:
            self.tokens.verify(credential, session_id)
        except TokenError as exc:
            raise _unauthorized(str(exc)) from None
        return None

    def require_scraper(self, request: Request) -> None:
        """``/metrics``: the metrics token or an API key, when either is configured."""
        if self._metrics_token is None and not self.enabled:
            return
        credential = self._bearer(request, "metrics token or API key")
        digest = hashlib.sha256(credential.encode(errors="replace")).digest()
        if self._metrics_token is not None and hmac.compare_digest(digest, self._metrics_token):
            return
        if self._owner(credential) is None:
            raise _unauthorized("invalid metrics token or API key")

    def issue(self, session_id: str) -> dict[str, object]:
        """The token fields of a ``POST /start`` reply (none when auth is off)."""
        if self.tokens is None:
            return {}
        token, expires = self.tokens.issue(session_id)
        return {"token": token, "tokenExpiresAt": expires}


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_CHALLENGE)
