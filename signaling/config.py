"""Signaling settings, read once from the environment at start-up."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.env import Environ, env_bool, env_float, env_int, env_list, env_str
from media.config import MediaConfig

__all__ = ["SecurityConfig", "SignalingConfig"]

_DEFAULT_WEB_DIR = str(Path(__file__).resolve().parent.parent / "web")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
#: An API key shorter than this could be guessed; generate one with `openssl rand -hex 24`.
MIN_SECRET_CHARS = 16


@dataclass(frozen=True)
class SecurityConfig:
    """Who may use the public API, from where, and how often."""

    #: Bearer keys of server-to-server callers; empty: the API is open (local demo).
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    #: HMAC-SHA256 key of session tokens. Derived from ``api_keys`` unless set, so every
    #: replica with the same keys issues and accepts the same tokens, across restarts.
    token_secret: bytes = field(default=b"", repr=False)
    #: Seconds a session token stays valid: it must outlast the call, whose page hangs up
    #: with it.
    token_ttl: float = 1200.0
    #: Origins whose pages may call the API from a browser (CORS); ``*``: any.
    allowed_origins: tuple[str, ...] = ("*",)
    #: Take the client address from the last ``X-Forwarded-For`` entry (set by a proxy).
    trust_proxy: bool = False
    #: Requests to ``/start`` and offers per client address and minute; 0: no limit.
    rate_limit: float = 60.0
    #: How many of those a client may send at once before the rate applies.
    rate_burst: int = 20
    #: Bearer token a Prometheus scraper may use on ``/metrics`` (an API key works too).
    #: With neither keys nor this token set, ``/metrics`` is open.
    metrics_token: str = field(default="", repr=False)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @classmethod
    def from_env(cls, environ: Environ) -> SecurityConfig:
        keys = env_list(environ, "VOICEBOTS_API_KEYS")
        for index, key in enumerate(keys, start=1):
            # The message names the position, never the value: it may reach a log.
            if _guessable(key):
                raise ValueError(
                    f"VOICEBOTS_API_KEYS: key {index} has {len(key)} characters; each key needs "
                    f"at least {MIN_SECRET_CHARS}, without spaces (e.g. `openssl rand -hex 24`)"
                )
        secret = env_str(environ, "VOICEBOTS_TOKEN_SECRET", "")
        if secret and len(secret) < MIN_SECRET_CHARS:
            raise ValueError(
                f"VOICEBOTS_TOKEN_SECRET has {len(secret)} characters; it needs at least "
                f"{MIN_SECRET_CHARS}"
            )
        metrics_token = env_str(environ, "VOICEBOTS_METRICS_TOKEN", "")
        if metrics_token and _guessable(metrics_token):
            raise ValueError(
                f"VOICEBOTS_METRICS_TOKEN has {len(metrics_token)} characters; it needs at "
                f"least {MIN_SECRET_CHARS}, without spaces"
            )
        raw_origins = env_list(environ, "VOICEBOTS_ALLOWED_ORIGINS")
        origins = tuple(origin.rstrip("/").lower() for origin in raw_origins)
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    "VOICEBOTS_ALLOWED_ORIGINS entries must be origins like "
                    f"https://app.example.com[:port] (or *), got {origin!r}"
                )
        if not raw_origins:
            # Open to every page only when the API itself is open.
            origins = () if keys else ("*",)
        return cls(
            api_keys=keys,
            token_secret=secret.encode() if secret else _derive_secret(keys),
            token_ttl=env_float(environ, "VOICEBOTS_TOKEN_TTL", cls.token_ttl, minimum=1.0),
            allowed_origins=origins,
            trust_proxy=env_bool(environ, "VOICEBOTS_TRUST_PROXY", cls.trust_proxy),
            rate_limit=env_float(environ, "VOICEBOTS_RATE_LIMIT", cls.rate_limit),
            rate_burst=env_int(environ, "VOICEBOTS_RATE_BURST", cls.rate_burst, minimum=1),
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
                "auth is OFF: VOICEBOTS_API_KEYS is not set, so anyone who reaches this server "
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
    host: str = "127.0.0.1"
    port: int = 7860
    #: Base URL of the spawner's internal control API.
    spawner_url: str = "http://127.0.0.1:7861"
    #: May carry a password (``rediss://:password@host``): kept out of ``repr``.
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    web_dir: str = _DEFAULT_WEB_DIR
    max_body_bytes: int = 256 * 1024
    media: MediaConfig = field(default_factory=MediaConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    @classmethod
    def from_env(cls, environ: Environ) -> SignalingConfig:
        return cls(
            host=env_str(environ, "VOICEBOTS_HOST", cls.host),
            port=env_int(environ, "VOICEBOTS_PORT", cls.port, minimum=0),
            spawner_url=env_str(environ, "VOICEBOTS_SPAWNER_URL", cls.spawner_url).rstrip("/"),
            redis_url=env_str(environ, "REDIS_URL", "redis://127.0.0.1:6379/0"),
            web_dir=env_str(environ, "VOICEBOTS_WEB_DIR", cls.web_dir),
            max_body_bytes=env_int(
                environ, "VOICEBOTS_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024
            ),
            media=MediaConfig.from_env(environ),
            security=SecurityConfig.from_env(environ),
        )
