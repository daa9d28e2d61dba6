"""How a setting is read: :class:`Setting`, and the parsers of its values.

Each process (signaling, spawner, bot, rq worker, caller) reads the environment once at
start-up into a frozen config and passes it down, through the declarations of
:mod:`common.settings`; these make those reads precise. A malformed value raises
``ValueError`` naming the variable (or the command-line option that carried it), so a typo
fails the start-up instead of silently taking the default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "Environ",
    "Service",
    "Setting",
    "parse_bool",
    "parse_choice",
    "parse_float",
    "parse_int",
    "parse_list",
    "parse_service",
    "parse_url",
    "redact_url",
]

Environ = Mapping[str, str]
T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment variable: how it parses, what it defaults to, what it means."""

    name: str
    #: The table's group (:class:`common.settings.Group`).
    group: str
    default: T
    #: One line for README's table.
    meaning: str
    #: ``(text, name) -> value``; raises ``ValueError`` naming ``name``.
    parse: Callable[[str, str], T] = field(repr=False)
    #: The default as the table shows it, where the value itself would not say it.
    shown: str = ""
    #: The ``voicebots`` command's option that overrides the variable, e.g. ``--port``.
    option: str = ""
    #: Set but empty is a value (an empty greeting: none), not the default.
    keep_empty: bool = False

    def read(self, environ: Environ) -> T:
        raw = environ.get(self.name)
        if raw is None:
            return self.default
        text = raw.strip()
        if not text and not self.keep_empty:
            return self.default
        return self.parse(text, self.name)

    def check_option(self, raw: str) -> str:
        """The option's text, once it parses (a bad one is refused naming the option)."""
        self.parse(raw.strip(), self.option)
        return raw.strip()

    @property
    def default_text(self) -> str:
        if self.shown:
            return self.shown
        value: Any = self.default
        if value is None or value in ("", ()):
            return "none"
        if isinstance(value, bool):
            return "`1`" if value else "`0`"
        if isinstance(value, float):
            return f"`{value:g}`"
        return f"`{value}`"


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


@dataclass(frozen=True)
class Service:
    """A provider, and the model (and, for speech, the voice) it runs."""

    provider: str
    model: str = ""
    voice: str = ""


def parse_service(
    raw: str, name: str, models: dict[str, str], voices: dict[str, str] | None
) -> Service:
    """``provider[:model][@voice]`` (the voice only where ``voices`` is given); a part left
    out is the provider's default. A model name may hold colons (``llama3.1:8b``)."""
    spec, at, voice = raw.partition("@") if voices is not None else (raw, "", "")
    provider, _, model = spec.partition(":")
    provider = provider.strip().lower()
    if provider not in models:
        raise ValueError(f"{name} must name one of {', '.join(models)}; got {raw!r}")
    if provider == "offline" and (model or at):
        raise ValueError(f"{name}: the offline provider takes no model or voice; got {raw!r}")
    return Service(
        provider,
        model.strip() or models[provider],
        (voice.strip() or voices[provider]) if voices is not None else "",
    )


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs (``redis://:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
