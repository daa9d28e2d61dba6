"""Parsers of setting values, shared by every entry point.

Each process (signaling, spawner, bot, rq worker, caller) reads the environment once at
start-up into a frozen config and passes it down, through the declarations of
:mod:`common.settings`; these parsers make those reads precise. A malformed value raises
``ValueError`` naming the variable (or the command-line option that carried it), so a typo
fails the start-up instead of silently taking the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Environ",
    "parse_bool",
    "parse_choice",
    "parse_float",
    "parse_int",
    "parse_list",
    "parse_url",
    "redact_url",
]

Environ = Mapping[str, str]


def parse_int(raw: str, name: str, *, minimum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def parse_float(raw: str, name: str, *, minimum: float = 0.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def parse_bool(raw: str, name: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def parse_list(raw: str, name: str) -> tuple[str, ...]:
    """A comma-separated list; empty items are dropped."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def parse_choice(raw: str, name: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``, compared without case (``allowed`` says which case is kept)."""
    for value in allowed:
        if raw.lower() == value.lower():
            return value
    raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")


def parse_url(raw: str, name: str) -> str:
    """An ``http://`` or ``https://`` URL with a host, without its trailing slash."""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 — raises on a port out of range
    except ValueError:
        raise ValueError(f"{name} must be an http:// or https:// URL, got {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs (``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
