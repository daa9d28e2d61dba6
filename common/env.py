"""Typed reads of environment settings, shared by every entry point.

Each process (signaling, spawner, bot, rq worker, caller) reads the environment once at
start-up into a frozen config and passes it down; these helpers make those reads precise.
A malformed value raises ``ValueError`` naming the variable, so a typo fails the start-up
instead of silently taking the default.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["env_bool", "env_float", "env_int", "env_list", "env_str", "redact_url"]

Environ = Mapping[str, str]


def env_str(environ: Environ, name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    return value or default


def env_int(environ: Environ, name: str, default: int, *, minimum: int | None = None) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(environ: Environ, name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_bool(environ: Environ, name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_list(environ: Environ, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A comma-separated list; empty items are dropped."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs (``redis://:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
