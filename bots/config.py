"""Configuration of a bot and of the post-call worker, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from bots.bot_file import BOT_ENV, BUILTIN_BOT
from common.env import Environ, env_bool, env_float, env_int, env_str
from media.config import MediaConfig

#: Half of the audio jitter buffer's 16 packets (media/jitter.py).
MAX_JITTER_FRAMES = 8

__all__ = ["AgentConfig", "BotConfig", "PostCallConfig", "ProviderConfig", "TurnStrategy"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one or "
    "two short sentences of plain text, without lists, markdown or emoji."
)
DEFAULT_GREETING = "Hello! I am listening."


class TurnStrategy(StrEnum):
    #: End the user's turn after VAD silence of ``turn_stop_secs``: a known, fixed wait.
    VAD = "vad"
    #: pipecat's Smart Turn v3 model decides whether the user has finished.
    SMART_TURN = "smart_turn"


@dataclass(frozen=True)
class ProviderConfig:
    """Which STT, LLM and TTS services a bot uses, and how to reach them."""

    stt: str = "offline"
    llm: str = "offline"
    tts: str = "offline"
    openai_api_key: str = ""
    openai_base_url: str = ""
    openai_stt_model: str = "gpt-4o-transcribe"
    openai_llm_model: str = "gpt-4o-mini"
    openai_tts_model: str = "gpt-4o-mini-tts"
    openai_tts_voice: str = "alloy"
    elevenlabs_api_key: str = ""
    elevenlabs_voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"
    elevenlabs_url: str = "wss://api.elevenlabs.io"

    def __repr__(self) -> str:
        # Keys never reach logs.
        return (
            f"ProviderConfig(stt={self.stt!r}, llm={self.llm!r}, tts={self.tts!r}, "
            f"openai_base_url={self.openai_base_url!r})"
        )

    @property
    def openai_client_key(self) -> str:
        # An OpenAI-compatible server without auth still needs a non-empty key in the client.
        return self.openai_api_key or "not-needed"

    @classmethod
    def from_env(cls, environ: Environ) -> ProviderConfig:
        openai_key = env_str(environ, "OPENAI_API_KEY", "")
        openai_url = env_str(environ, "OPENAI_BASE_URL", "")
        eleven_key = env_str(environ, "ELEVENLABS_API_KEY", "")
        has_openai = bool(openai_key or openai_url)
        default_ai = "openai" if has_openai else "offline"
        default_tts = "elevenlabs" if eleven_key else default_ai
        stt = _choice(environ, "VOICEBOTS_STT", default_ai, ("openai", "offline"))
        llm = _choice(environ, "VOICEBOTS_LLM", default_ai, ("openai", "offline"))
        tts = _choice(environ, "VOICEBOTS_TTS", default_tts, ("openai", "elevenlabs", "offline"))
        if "openai" in (stt, llm, tts) and not has_openai:
            raise ValueError(
                "an openai provider needs OPENAI_API_KEY or OPENAI_BASE_URL (for an "
                "OpenAI-compatible server)"
            )
        if tts == "elevenlabs" and not eleven_key:
            raise ValueError("VOICEBOTS_TTS=elevenlabs needs ELEVENLABS_API_KEY")
        return cls(
            stt=stt,
            llm=llm,
            tts=tts,
            openai_api_key=openai_key,
            openai_base_url=openai_url,
            openai_stt_model=env_str(environ, "VOICEBOTS_OPENAI_STT_MODEL", cls.openai_stt_model),
            openai_llm_model=env_str(environ, "VOICEBOTS_OPENAI_LLM_MODEL", cls.openai_llm_model),
            openai_tts_model=env_str(environ, "VOICEBOTS_OPENAI_TTS_MODEL", cls.openai_tts_model),
            openai_tts_voice=env_str(environ, "VOICEBOTS_OPENAI_TTS_VOICE", cls.openai_tts_voice),
            elevenlabs_api_key=eleven_key,
            elevenlabs_voice_id=env_str(environ, "ELEVENLABS_VOICE_ID", cls.elevenlabs_voice_id),
            elevenlabs_model=env_str(environ, "VOICEBOTS_ELEVENLABS_MODEL", cls.elevenlabs_model),
            elevenlabs_url=env_str(environ, "VOICEBOTS_ELEVENLABS_URL", cls.elevenlabs_url),
        )

    def describe(self) -> str:
        """One log line saying which providers run, and that offline ones need no key."""
        parts = [f"stt={self.stt}", f"llm={self.llm}", f"tts={self.tts}"]
        text = "providers: " + " ".join(parts)
        if "offline" in (self.stt, self.llm, self.tts):
            text += (
                " (offline = pocketsphinx STT, scripted echo LLM, espeak-ng TTS; set "
                "OPENAI_API_KEY / ELEVENLABS_API_KEY for cloud providers)"
            )
        return text


@dataclass(frozen=True)
class AgentConfig:
    """Settings of the built-in agent (:mod:`bots.agent`), read where it is imported."""

    providers: ProviderConfig = field(default_factory=ProviderConfig)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    #: Spoken when the call connects; empty for none.
    greeting: str = DEFAULT_GREETING
    turn_strategy: TurnStrategy = TurnStrategy.VAD
    vad_stop_secs: float = 0.2
    #: Extra silence after VAD stop before the turn ends (the ``vad`` strategy).
    turn_stop_secs: float = 0.3

    @classmethod
    def from_env(cls, environ: Environ) -> AgentConfig:
        turn = _choice(environ, "VOICEBOTS_TURN", TurnStrategy.VAD.value, tuple(TurnStrategy))
        return cls(
            providers=ProviderConfig.from_env(environ),
            system_prompt=env_str(environ, "VOICEBOTS_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT),
            greeting=environ.get("VOICEBOTS_GREETING", DEFAULT_GREETING).strip(),
            turn_strategy=TurnStrategy(turn),
            vad_stop_secs=env_float(environ, "VOICEBOTS_VAD_STOP_SECS", cls.vad_stop_secs),
            turn_stop_secs=env_float(environ, "VOICEBOTS_TURN_STOP_SECS", cls.turn_stop_secs),
        )


@dataclass(frozen=True)
class BotConfig:
    """Settings of a bot process, whatever bot file it runs."""

    #: The bot file: a path to a ``.py`` file or a dotted module name (``bots.agent``, the
    #: built-in agent, when none is given).
    bot: str = BUILTIN_BOT
    media: MediaConfig = field(default_factory=MediaConfig)
    #: Later packets the audio jitter buffer waits for before releasing one (20 ms each):
    #: 0 hands each packet on as it arrives (media/jitter.py).
    jitter_frames: int = 0
    #: A call that has not connected by then ends with ``connect_timeout``.
    connect_timeout: float = 20.0
    #: No inbound audio for this long ends the call with ``idle_timeout``.
    idle_timeout: float = 30.0
    max_call_seconds: float = 900.0
    heartbeat_interval: float = 1.0
    #: After a hang-up, how long ``bot()`` has to return before it is cancelled (within the
    #: spawner's 5 s wait for the call to end, so the call is recorded as hung up).
    end_grace: float = 3.0
    #: Lets a call's ``request_data`` inject faults (crash, hang, memory hog) — for tests of
    #: the spawner's recovery only; never enable it where untrusted clients connect.
    faults: bool = False

    @classmethod
    def from_env(cls, environ: Environ) -> BotConfig:
        return cls(
            bot=env_str(environ, BOT_ENV, BUILTIN_BOT),
            media=MediaConfig.from_env(environ),
            jitter_frames=_jitter_frames(environ),
            connect_timeout=env_float(
                environ, "VOICEBOTS_CONNECT_TIMEOUT", cls.connect_timeout, minimum=0.1
            ),
            idle_timeout=env_float(
                environ, "VOICEBOTS_IDLE_TIMEOUT", cls.idle_timeout, minimum=0.1
            ),
            max_call_seconds=env_float(
                environ, "VOICEBOTS_MAX_CALL_SECONDS", cls.max_call_seconds, minimum=1.0
            ),
            heartbeat_interval=env_float(
                environ, "VOICEBOTS_HEARTBEAT_SECS", cls.heartbeat_interval, minimum=0.05
            ),
            faults=env_bool(environ, "VOICEBOTS_FAULTS", False),
        )


@dataclass(frozen=True)
class PostCallConfig:
    """Settings of the rq job that runs after each call (summary, webhook)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    providers: ProviderConfig = field(default_factory=ProviderConfig)
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_attempts: int = 5
    #: Seconds before the first retry; doubles after each failed attempt.
    webhook_backoff: float = 1.0
    webhook_timeout: float = 10.0

    def __repr__(self) -> str:
        return (
            f"PostCallConfig(redis_url=<hidden>, llm={self.providers.llm!r}, "
            f"webhook_url={self.webhook_url!r})"
        )

    @classmethod
    def from_env(cls, environ: Environ) -> PostCallConfig:
        return cls(
            redis_url=env_str(environ, "REDIS_URL", cls.redis_url),
            providers=ProviderConfig.from_env(environ),
            webhook_url=env_str(environ, "VOICEBOTS_WEBHOOK_URL", ""),
            webhook_secret=env_str(environ, "VOICEBOTS_WEBHOOK_SECRET", ""),
            webhook_attempts=env_int(
                environ, "VOICEBOTS_WEBHOOK_ATTEMPTS", cls.webhook_attempts, minimum=1
            ),
            webhook_backoff=env_float(environ, "VOICEBOTS_WEBHOOK_BACKOFF", cls.webhook_backoff),
            webhook_timeout=env_float(
                environ, "VOICEBOTS_WEBHOOK_TIMEOUT", cls.webhook_timeout, minimum=0.1
            ),
        )


def _choice(environ: Environ, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env_str(environ, name, default).lower()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _jitter_frames(environ: Environ) -> int:
    frames = env_int(environ, "VOICEBOTS_JITTER_FRAMES", BotConfig.jitter_frames, minimum=0)
    if frames > MAX_JITTER_FRAMES:
        raise ValueError(f"VOICEBOTS_JITTER_FRAMES must be <= {MAX_JITTER_FRAMES}, got {frames}")
    return frames
