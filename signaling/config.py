"""Signaling settings, read once from the environment at start-up."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.env import Environ
from common.settings import (
    ALLOWED_ORIGINS,
    API_KEYS,
    CREDENTIAL_MARGIN,
    HOST,
    MAX_CALL_SECONDS,
    METRICS_TOKEN,
    PORT,
    RATE_LIMIT,
    REDIS_URL,
    SPAWNER_URL,
    TRUST_PROXY,
    credential_ttl,
)
from media.config import MediaConfig

__all__ = ["SecurityConfig", "SignalingConfig"]

_DEFAULT_WEB_DIR = str(Path(__file__).resolve().parent.parent / "web")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
#: An API key shorter than this could be guessed; generate one with `openssl rand -hex 24`.
MIN_SECRET_CHARS = 16
#: A client may send this share of its minute's requests at once, before the rate applies.
RATE_BURST_SHARE = 1 / 3
#: The largest request body signaling reads (an offer's SDP is a few kB).
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class SecurityConfig:
    """Who may use the public API, from where, and how often."""

    #: Bearer keys of server-to-server callers; empty: the API is open (local demo).
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: HMAC-SHA256 key of session tokens, derived from ``api_keys``: every replica with the
    #: same keys issues and accepts the same tokens, across restarts.
    token_secret: bytes = field(default=b"", repr=False)
    #: Seconds a session token stays valid: it must outlast the call, whose page hangs up
    #: with it (``VOICEBOTS_MAX_CALL_SECONDS`` and a margin).
    token_ttl: float = MAX_CALL_SECONDS.default + CREDENTIAL_MARGIN
    #: Origins whose pages may call the API from a browser (CORS); ``*``: any.
    allowed_origins: tuple[str, ...] = ("*",)
    #: Take the client address from the last ``X-Forwarded-For`` entry (set by a proxy).
    trust_proxy: bool = TRUST_PROXY.default
    #: Requests to ``/start`` and offers per client address and minute; 0: no limit.
    rate_limit: float = RATE_LIMIT.default
    #: How many of those a client may send at once before the rate applies.
    rate_burst: int = round(RATE_LIMIT.default * RATE_BURST_SHARE)
    #: Bearer token a Prometheus scraper may use on ``/metrics`` (an API key works too).
    #: With neither keys nor this token set, ``/metrics`` is open.
    metrics_token: str = field(default="", repr=False)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @classmethod
    def from_env(cls, environ: Environ) -> SecurityConfig:
        keys = API_KEYS.read(environ)
        for index, key in enumerate(keys, start=1):
            # The message names the position, never the value: it may reach a log.
            if _guessable(key):
                raise ValueError(
                    f"{API_KEYS.name}: key {index} has {len(key)} characters; each key needs "
                    f"at least {MIN_SECRET_CHARS}, without spaces (e.g. `openssl rand -hex 24`)"
                )
        metrics_token = METRICS_TOKEN.read(environ)
        if metrics_token and _guessable(metrics_token):
            raise ValueError(
                f"{METRICS_TOKEN.name} has {len(metrics_token)} characters; it needs at "
                f"least {MIN_SECRET_CHARS}, without spaces"
            )
        raw_origins = ALLOWED_ORIGINS.read(environ)
        origins = tuple(origin.rstrip("/").lower() for origin in raw_origins)
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{ALLOWED_ORIGINS.name} entries must be origins like "
                    f"https://app.example.com[:port] (or *), got {origin!r}"
                )
        if not raw_origins:
            # Open to every page only when the API itself is open.
            origins = () if keys else ("*",)
        rate_limit = RATE_LIMIT.read(environ)
        return cls(
            api_keys=keys,
            token_secret=_derive_secret(keys),
            token_ttl=credential_ttl(environ),
            allowed_origins=origins,
            trust_proxy=TRUST_PROXY.read(environ),
            rate_limit=rate_limit,
            rate_burst=max(1, round(rate_limit * RATE_BURST_SHARE)),
            metrics_token=metrics_token,
        )

    def describe(self) -> str:
        """One start-up log line; it names no secret."""
        origins = ", ".join(self.allowed_origins) or "none (same origin only)"
        rate = (
            f"{self.rate_limit:g}/min per client (burst {self.rate_burst})"
            if self.rate_limit > 0
            else "off"
        )
        proxy = ", client address from X-Forwarded-For" if self.trust_proxy else ""
        if self.metrics_token:
            scrape = "/metrics needs the metrics token or an API key"
        elif self.auth_enabled:
            scrape = "/metrics needs an API key"
        else:
            scrape = "/metrics is open"
        if not self.auth_enabled:
            return (
                f"auth is OFF: {API_KEYS.name} is not set, so anyone who reaches this server "
                f"can start calls (fine for a local demo); CORS origins: {origins}; "
                f"rate limit: {rate}{proxy}; {scrape}"
            )
        return (
            f"auth on: {len(self.api_keys)} API keys, session tokens valid "
            f"{self.token_ttl:g} s; CORS origins: {origins}; rate limit: {rate}{proxy}; "
            f"{scrape}"
        )


def _guessable(bearer: str) -> bool:
    """A bearer credential too short to resist guessing, or one HTTP would mangle."""
    return len(bearer) < MIN_SECRET_CHARS or any(c.isspace() for c in bearer)


def _derive_secret(keys: tuple[str, ...]) -> bytes:
    if not keys:
        return b""
    # Order-independent, so replicas listing the same keys differently still agree.
    material = "\n".join(sorted(keys)).encode()
    return hmac.new(b"voicebots session token secret v1", material, hashlib.sha256).digest()


@dataclass(frozen=True)
class SignalingConfig:
    host: str = HOST.default
    port: int = PORT.default
    #: Base URL of the spawner's internal control API.
    spawner_url: str = SPAWNER_URL.default
    #: May carry a password (``rediss://:password@host``): kept out of ``repr``.
    redis_url: str = field(default=REDIS_URL.default, repr=False)
    #: The page's files; tests serve another page from elsewhere.
    web_dir: str = _DEFAULT_WEB_DIR
    max_body_bytes: int = MAX_BODY_BYTES
    media: MediaConfig = field(default_factory=MediaConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    @classmethod
    def from_env(cls, environ: Environ) -> SignalingConfig:
        return cls(
            host=HOST.read(environ),
            port=PORT.read(environ),
            spawner_url=SPAWNER_URL.read(environ),
            redis_url=REDIS_URL.read(environ),
            media=MediaConfig.from_env(environ),
            security=SecurityConfig.from_env(environ),
        )
