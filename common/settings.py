"""Every setting a user can give voicebots: its variable, type, default and meaning.

This module is the one place where a setting is named and its default lives. The config
classes (``bots/config.py``, ``media/config.py``, ``signaling/config.py``,
``spawner/config.py``, ``spawner/limits.py``) read the environment only through these
declarations, the ``voicebots`` command's options (``--port``, ``--max-bots`` …) override
them by the same declarations, and ``voicebots settings`` prints the table README shows.

How settings are counted (README's table, and the test that keeps it at 40 at most): each
environment variable a user can set is one setting, whichever processes read it; an option of
the ``voicebots`` command is the setting whose variable it overrides, not another one;
OpenTelemetry's standard ``OTEL_*`` variables are one setting, ``OTEL_TRACES_EXPORTER``, since
the OpenTelemetry SDK defines and documents the rest. What only a benchmark or a test would
move (timeouts of the pool, retry pacing, buffer sizes) is a named constant in the module that
uses it; tests that need another value build the frozen config with it.
"""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from common.env import (
    Environ,
    Service,
    Setting,
    parse_bool,
    parse_choice,
    parse_float,
    parse_int,
    parse_list,
    parse_service,
    parse_url,
)

__all__ = [
    "CREDENTIAL_MARGIN",
    "SETTINGS",
    "Group",
    "Service",
    "Setting",
    "credential_ttl",
    "is_declared",
    "markdown_table",
]

T = TypeVar("T")


class Group(StrEnum):
    CORE = "core"
    POOL = "pool"
    CALLS = "calls"
    MEDIA = "media"
    SECURITY = "security"
    AGENT = "agent"
    POST_CALL = "post-call"
    OBSERVABILITY = "observability"
    TESTING = "testing"


_declared: list[Setting[Any]] = []


def _declare(setting: Setting[T]) -> Setting[T]:
    if any(s.name == setting.name for s in _declared):
        raise ValueError(f"{setting.name} is declared twice")
    _declared.append(setting)
    return setting


def _text(name: str, group: Group, default: str, meaning: str, **extra: Any) -> Setting[str]:
    return _declare(Setting(name, group, default, meaning, _as_text, **extra))


def _as_text(raw: str, _name: str) -> str:
    return raw


def _integer(
    name: str, group: Group, default: int, meaning: str, *, minimum: int, **extra: Any
) -> Setting[int]:
    parse = partial(parse_int, minimum=minimum)
    return _declare(Setting(name, group, default, meaning, parse, **extra))


def _number(
    name: str, group: Group, default: float, meaning: str, *, minimum: float = 0.0, **extra: Any
) -> Setting[float]:
    parse = partial(parse_float, minimum=minimum)
    return _declare(Setting(name, group, default, meaning, parse, **extra))


def _flag(name: str, group: Group, default: bool, meaning: str) -> Setting[bool]:
    return _declare(Setting(name, group, default, meaning, parse_bool))


def _items(name: str, group: Group, meaning: str, **extra: Any) -> Setting[tuple[str, ...]]:
    return _declare(Setting(name, group, (), meaning, parse_list, **extra))


def _choice(
    name: str, group: Group, default: str, allowed: tuple[str, ...], meaning: str, **extra: Any
) -> Setting[str]:
    parse = partial(parse_choice, allowed=allowed)
    return _declare(Setting(name, group, default, meaning, parse, **extra))


# -- the providers of the built-in agent ---------------------------------------------------

#: Per provider, the model (and voice) it runs when its setting names none.
STT_MODELS = {"offline": "", "openai": "gpt-4o-transcribe"}
LLM_MODELS = {"offline": "", "openai": "gpt-4o-mini"}
TTS_MODELS = {"offline": "", "openai": "gpt-4o-mini-tts", "elevenlabs": "eleven_flash_v2_5"}
TTS_VOICES = {"offline": "", "openai": "alloy", "elevenlabs": "21m00Tcm4TlvDq8ikWAM"}


def _service(
    name: str,
    meaning: str,
    shown: str,
    models: dict[str, str],
    voices: dict[str, str] | None = None,
) -> Setting[Service | None]:
    parse = partial(parse_service, models=models, voices=voices)
    setting: Setting[Service | None] = Setting(name, Group.AGENT, None, meaning, parse, shown)
    return _declare(setting)


# -- core --------------------------------------------------------------------------------

REDIS_URL = _text(
    "REDIS_URL",
    Group.CORE,
    "redis://127.0.0.1:6379/0",
    "Redis for call records and the post-call queue (`rediss://` for TLS)",
    option="--redis-url",
)
BOT = _text(
    "VOICEBOTS_BOT",
    Group.CORE,
    "bots.agent",
    "the bot file: a `.py` path or a dotted module name defining `async def bot(runner_args)`",
    shown="the built-in agent (`bots.agent`)",
    option="--bot",
)
HOST = _text(
    "VOICEBOTS_HOST",
    Group.CORE,
    "127.0.0.1",
    "address signaling (the page and the API) listens on; `0.0.0.0`: every interface",
    option="--host",
)
PORT = _integer(
    "VOICEBOTS_PORT", Group.CORE, 7860, "signaling's HTTP port", minimum=0, option="--port"
)
SPAWNER_HOST = _text(
    "VOICEBOTS_SPAWNER_HOST",
    Group.CORE,
    "127.0.0.1",
    "address the spawner's control API listens on; never a public one",
)
SPAWNER_URL = _declare(
    Setting(
        "VOICEBOTS_SPAWNER_URL",
        Group.CORE,
        "http://127.0.0.1:7861",
        "the spawner's control API as signaling reaches it; the spawner listens on its port",
        parse_url,
        option="--spawner-url",
    )
)

# -- pool --------------------------------------------------------------------------------

MIN_IDLE = _integer(
    "VOICEBOTS_MIN_IDLE",
    Group.POOL,
    2,
    "warm bots kept ready beyond those in calls (more while calls arrive quickly)",
    minimum=0,
    option="--min-idle",
)
MAX_BOTS = _integer(
    "VOICEBOTS_MAX_BOTS",
    Group.POOL,
    8,
    "bots, warm and in calls, at most: the calls one node takes at once",
    minimum=1,
    option="--max-bots",
)
BOT_CPU = _number(
    "VOICEBOTS_BOT_CPU",
    Group.POOL,
    0.5,
    "CPUs per bot over the kernel's 100 ms period (cgroup `cpu.max`); a quiet bot may save "
    "one period's share and spend it in a burst",
    minimum=0.01,
)
BOT_MEMORY_MB = _integer(
    "VOICEBOTS_BOT_MEMORY_MB",
    Group.POOL,
    1024,
    "memory per bot (cgroup `memory.max`; where no cgroup is writable, `RLIMIT_AS` bounds "
    "its growth instead)",
    minimum=64,
)
DRAIN_TIMEOUT = _number(
    "VOICEBOTS_DRAIN_TIMEOUT",
    Group.POOL,
    300.0,
    "on SIGTERM, seconds live calls may go on (no new ones start) before they are ended",
)
SPOOL_DIR = _text(
    "VOICEBOTS_SPOOL_DIR",
    Group.POOL,
    str(Path.home() / ".local" / "state" / "voicebots" / "spool"),
    "call records Redis could not take wait here, and live calls are journaled here",
    shown="`~/.local/state/voicebots/spool`",
)

# -- calls -------------------------------------------------------------------------------

IDLE_TIMEOUT = _number(
    "VOICEBOTS_IDLE_TIMEOUT",
    Group.CALLS,
    30.0,
    "seconds without the caller's audio before a call ends",
    minimum=0.1,
)
MAX_CALL_SECONDS = _number(
    "VOICEBOTS_MAX_CALL_SECONDS",
    Group.CALLS,
    900.0,
    "longest call; session tokens and TURN credentials are valid this long and 300 s more",
    minimum=1.0,
)

# -- media -------------------------------------------------------------------------------

ICE_SERVERS = _items(
    "VOICEBOTS_ICE_SERVERS",
    Group.MEDIA,
    "comma-separated `stun:`/`turn:` URLs, given to both peers",
)
TURN_USERNAME = _text(
    "VOICEBOTS_TURN_USERNAME", Group.MEDIA, "", "static username of the `turn:` servers"
)
TURN_CREDENTIAL = _text(
    "VOICEBOTS_TURN_CREDENTIAL", Group.MEDIA, "", "static credential of the `turn:` servers"
)
TURN_SECRET = _text(
    "VOICEBOTS_TURN_SECRET",
    Group.MEDIA,
    "",
    "the TURN server's shared secret (coturn `static-auth-secret`): credentials of their own "
    "per session instead of static ones",
)
UDP_PORTS = _text(
    "VOICEBOTS_UDP_PORTS",
    Group.MEDIA,
    "",
    "e.g. `40000-40031`: bots bind ICE only in this range; allow two ports per bot",
    shown="any port",
    option="--udp-ports",
)
BIND_HOST = _text(
    "VOICEBOTS_BIND_HOST",
    Group.MEDIA,
    "",
    "bind ICE sockets on this one host or address (`fly-global-services` on Fly.io)",
    shown="every interface",
)
PUBLIC_IP = _text(
    "VOICEBOTS_PUBLIC_IP",
    Group.MEDIA,
    "",
    "IPv4 address bots advertise in place of their private one (a 1:1 NAT, Fly.io)",
    option="--public-ip",
)

# -- security ----------------------------------------------------------------------------

API_KEYS = _items(
    "VOICEBOTS_API_KEYS",
    Group.SECURITY,
    "comma-separated bearer keys of your servers (16+ characters each, e.g. `openssl rand "
    "-hex 24`); session tokens are signed with a secret derived from them",
    shown="none (the API is open)",
)
ALLOWED_ORIGINS = _items(
    "VOICEBOTS_ALLOWED_ORIGINS",
    Group.SECURITY,
    "comma-separated origins (`https://app.example.com`) whose pages may call the API",
    shown="`*` without keys, none with keys",
)
METRICS_TOKEN = _text(
    "VOICEBOTS_METRICS_TOKEN",
    Group.SECURITY,
    "",
    "bearer token (16+ characters) a scraper may use on `GET /metrics`; an API key works too",
)
TRUST_PROXY = _flag(
    "VOICEBOTS_TRUST_PROXY",
    Group.SECURITY,
    False,
    "`1`: a client's address is the last `X-Forwarded-For` entry (behind a proxy that appends it)",
)
RATE_LIMIT = _number(
    "VOICEBOTS_RATE_LIMIT",
    Group.SECURITY,
    60.0,
    "`/start` requests and offers per client address and minute, a third of them at once; "
    "`0`: no limit",
)
MAX_CALLS_PER_KEY = _integer(
    "VOICEBOTS_MAX_CALLS_PER_KEY",
    Group.SECURITY,
    0,
    "live calls one API key may have at once (more get `429`); `0`: no cap",
    minimum=0,
)

# -- agent -------------------------------------------------------------------------------

OPENAI_API_KEY = _text(
    "OPENAI_API_KEY", Group.AGENT, "", "key of the `openai` providers and the call summary"
)
OPENAI_BASE_URL = _text(
    "OPENAI_BASE_URL",
    Group.AGENT,
    "",
    "an OpenAI-compatible server for them (e.g. `http://localhost:8000/v1`)",
)
ELEVENLABS_API_KEY = _text(
    "ELEVENLABS_API_KEY", Group.AGENT, "", "key of the `elevenlabs` speech provider"
)
STT = _service(
    "VOICEBOTS_STT",
    "speech to text: `offline` (pocketsphinx) or `openai[:model]` (model "
    f"`{STT_MODELS['openai']}`)",
    "`openai` with an OpenAI key or URL, else `offline`",
    STT_MODELS,
)
LLM = _service(
    "VOICEBOTS_LLM",
    "the replies, and the call summary: `offline` (scripted) or `openai[:model]` (model "
    f"`{LLM_MODELS['openai']}`)",
    "as `VOICEBOTS_STT`",
    LLM_MODELS,
)
TTS = _service(
    "VOICEBOTS_TTS",
    "speech: `offline` (espeak-ng), `openai[:model][@voice]` "
    f"(`{TTS_MODELS['openai']}`, `{TTS_VOICES['openai']}`) or `elevenlabs[:model][@voice]` "
    f"(`{TTS_MODELS['elevenlabs']}`, `{TTS_VOICES['elevenlabs']}`)",
    "`elevenlabs` with its key, else as `VOICEBOTS_STT`",
    TTS_MODELS,
    TTS_VOICES,
)
SYSTEM_PROMPT = _text(
    "VOICEBOTS_SYSTEM_PROMPT",
    Group.AGENT,
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one or "
    "two short sentences of plain text, without lists, markdown or emoji.",
    "the LLM's system message",
    shown="a short voice-assistant prompt",
)
GREETING = _text(
    "VOICEBOTS_GREETING",
    Group.AGENT,
    "Hello! I am listening.",
    "spoken when the call connects; empty for none",
    keep_empty=True,
)

# -- post-call ---------------------------------------------------------------------------

WEBHOOK_URL = _text(
    "VOICEBOTS_WEBHOOK_URL", Group.POST_CALL, "", "each ended call's record is POSTed here"
)
WEBHOOK_SECRET = _text(
    "VOICEBOTS_WEBHOOK_SECRET",
    Group.POST_CALL,
    "",
    "HMAC-SHA256 key of the webhook's `X-Voicebots-Signature`",
)

# -- observability -----------------------------------------------------------------------

LOG_LEVEL = _choice(
    "VOICEBOTS_LOG_LEVEL",
    Group.OBSERVABILITY,
    "INFO",
    ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"),
    "lines at this level and above, as JSON objects (as text when stderr is a terminal)",
    option="--log-level",
)
OTEL_TRACES_EXPORTER = _choice(
    "OTEL_TRACES_EXPORTER",
    Group.OBSERVABILITY,
    "none",
    ("none", "otlp", "console"),
    "`otlp` (OTLP over HTTP) or `console` traces each call; OpenTelemetry's other standard "
    "`OTEL_*` variables (endpoint, headers, `OTEL_SERVICE_NAME`) apply as it defines them",
)

# -- testing -----------------------------------------------------------------------------

FAULTS = _flag(
    "VOICEBOTS_FAULTS",
    Group.TESTING,
    False,
    "`1`: a call's `request_data` may make its bot crash, hang or hog memory, for tests of "
    "recovery; never where untrusted clients connect",
)

#: Every setting, in README's order.
SETTINGS: tuple[Setting[Any], ...] = tuple(_declared)

#: How long past the longest call a client's credentials stay valid: the wait between
#: ``POST /start`` and the offer, and the call's connection.
CREDENTIAL_MARGIN = 300.0


def credential_ttl(environ: Environ) -> float:
    """Seconds a session token or TURN credential is valid: it must outlast the call."""
    return MAX_CALL_SECONDS.read(environ) + CREDENTIAL_MARGIN


def is_declared(name: str) -> bool:
    """Whether ``name`` is a setting (OpenTelemetry's ``OTEL_*`` count as one)."""
    return name.startswith("OTEL_") or any(s.name == name for s in SETTINGS)


def markdown_table() -> str:
    """README's settings table (what ``voicebots settings`` prints)."""
    lines = ["| group | variable | option | default | meaning |", "|---|---|---|---|---|"]
    for group in Group:
        for s in (s for s in SETTINGS if s.group == group):
            option = f"`{s.option}`" if s.option else ""
            cells = (group.value, f"`{s.name}`", option, s.default_text, s.meaning)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
