"""Configuration of a bot and of the post-call worker, read once from the environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.env import Environ
from common.settings import (
    BOT,
    ELEVENLABS_API_KEY,
    FAULTS,
    GREETING,
    IDLE_TIMEOUT,
    LLM,
    LLM_MODELS,
    MAX_CALL_SECONDS,
    OPENAI_API_KEY,
    OPENAI_BASE_URL,
    REDIS_URL,
    STT,
    STT_MODELS,
    SYSTEM_PROMPT,
    TTS,
    TTS_MODELS,
    TTS_VOICES,
    WEBHOOK_SECRET,
    WEBHOOK_URL,
    Service,
)
from media.config import MediaConfig

__all__ = ["AgentConfig", "BotConfig", "PostCallConfig", "ProviderConfig"]

#: Half of the audio jitter buffer's 16 packets (media/jitter.py).
MAX_JITTER_FRAMES = 8
#: The built-in agent's end of turn: Silero VAD silence before "stopped speaking", then the
#: extra silence before the turn ends — a known, fixed wait, which the benchmark subtracts.
VAD_STOP_SECS = 0.2
TURN_STOP_SECS = 0.3
#: Seconds between a bot's heartbeats to the spawner (whose timeout is ten of them).
HEARTBEAT_INTERVAL = 1.0
#: A call that has not connected this long after its bot answered the offer ends.
CONNECT_TIMEOUT = 20.0
#: Webhook deliveries per call, the pause before the first retry (doubling after each
#: failed attempt: 1, 2, 4, 8 s) and the time one attempt may take.
WEBHOOK_ATTEMPTS = 5
WEBHOOK_BACKOFF = 1.0
WEBHOOK_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProviderConfig:
    """Which STT, LLM and TTS services a bot uses, and how to reach them."""

    stt: str = "offline"
    llm: str = "offline"
    tts: str = "offline"
    openai_api_key: str = ""
    openai_base_url: str = ""
    openai_stt_model: str = STT_MODELS["openai"]
    openai_llm_model: str = LLM_MODELS["openai"]
    openai_tts_model: str = TTS_MODELS["openai"]
    openai_tts_voice: str = TTS_VOICES["openai"]
    elevenlabs_api_key: str = ""
    elevenlabs_voice_id: str = TTS_VOICES["elevenlabs"]
    elevenlabs_model: str = TTS_MODELS["elevenlabs"]
    #: ElevenLabs' streaming API; tests point it at the fake server.
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
        openai_key = OPENAI_API_KEY.read(environ)
        openai_url = OPENAI_BASE_URL.read(environ)
        eleven_key = ELEVENLABS_API_KEY.read(environ)
        has_openai = bool(openai_key or openai_url)
        ai = "openai" if has_openai else "offline"
        speech = "elevenlabs" if eleven_key else ai
        stt = STT.read(environ) or Service(ai, STT_MODELS[ai])
        llm = LLM.read(environ) or Service(ai, LLM_MODELS[ai])
        tts = TTS.read(environ) or Service(speech, TTS_MODELS[speech], TTS_VOICES[speech])
        if "openai" in (stt.provider, llm.provider, tts.provider) and not has_openai:
            raise ValueError(
                f"an openai provider needs {OPENAI_API_KEY.name} or {OPENAI_BASE_URL.name} "
                "(for an OpenAI-compatible server)"
            )
        if tts.provider == "elevenlabs" and not eleven_key:
            raise ValueError(f"{TTS.name}=elevenlabs needs {ELEVENLABS_API_KEY.name}")
        openai_tts = tts if tts.provider == "openai" else None
        eleven_tts = tts if tts.provider == "elevenlabs" else None
        return cls(
            stt=stt.provider,
            llm=llm.provider,
            tts=tts.provider,
            openai_api_key=openai_key,
            openai_base_url=openai_url,
            openai_stt_model=stt.model if stt.provider == "openai" else cls.openai_stt_model,
            openai_llm_model=llm.model if llm.provider == "openai" else cls.openai_llm_model,
            openai_tts_model=openai_tts.model if openai_tts else cls.openai_tts_model,
            openai_tts_voice=openai_tts.voice if openai_tts else cls.openai_tts_voice,
            elevenlabs_api_key=eleven_key,
            elevenlabs_voice_id=eleven_tts.voice if eleven_tts else cls.elevenlabs_voice_id,
            elevenlabs_model=eleven_tts.model if eleven_tts else cls.elevenlabs_model,
        )

    def describe(self) -> str:
        """One log line saying which providers run, and that offline ones need no key."""
        parts = [f"stt={self.stt}", f"llm={self.llm}", f"tts={self.tts}"]
        text = "providers: " + " ".join(parts)
        if "offline" in (self.stt, self.llm, self.tts):
            text += (
                " (offline = pocketsphinx STT, scripted echo LLM, espeak-ng TTS; set "
                f"{OPENAI_API_KEY.name} / {ELEVENLABS_API_KEY.name} for cloud providers)"
            )
        return text


@dataclass(frozen=True)
class AgentConfig:
    """Settings of the built-in agent (:mod:`bots.agent`), read where it is imported."""

    providers: ProviderConfig = field(default_factory=ProviderConfig)
    system_prompt: str = SYSTEM_PROMPT.default
    #: Spoken when the call connects; empty for none.
    greeting: str = GREETING.default
    vad_stop_secs: float = VAD_STOP_SECS
    turn_stop_secs: float = TURN_STOP_SECS

    @classmethod
    def from_env(cls, environ: Environ) -> AgentConfig:
        return cls(
            providers=ProviderConfig.from_env(environ),
            system_prompt=SYSTEM_PROMPT.read(environ),
            greeting=GREETING.read(environ),
        )


@dataclass(frozen=True)
class BotConfig:
    """Settings of a bot process, whatever bot file it runs.

    Fields without a setting are fixed for users; tests build the config with other values.
    """

    #: The bot file: a path to a ``.py`` file or a dotted module name (``bots.agent``, the
    #: built-in agent, when none is given).
    bot: str = BOT.default
    media: MediaConfig = field(default_factory=MediaConfig)
    #: Later packets the audio jitter buffer waits for before releasing one (20 ms each):
    #: 0 hands each packet on as it arrives (media/jitter.py), at most ``MAX_JITTER_FRAMES``.
    jitter_frames: int = 0
    #: A call that has not connected by then ends with ``connect_timeout``.
    connect_timeout: float = CONNECT_TIMEOUT
    #: No inbound audio for this long ends the call with ``idle_timeout``.
    idle_timeout: float = IDLE_TIMEOUT.default
    max_call_seconds: float = MAX_CALL_SECONDS.default
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    #: After a hang-up, how long ``bot()`` has to return before it is cancelled (within the
    #: spawner's 5 s wait for the call to end, so the call is recorded as hung up).
    end_grace: float = 3.0
    #: Lets a call's ``request_data`` inject faults (crash, hang, memory hog) — for tests of
    #: the spawner's recovery only; never enable it where untrusted clients connect.
    faults: bool = FAULTS.default

    def __post_init__(self) -> None:
        if not 0 <= self.jitter_frames <= MAX_JITTER_FRAMES:
            raise ValueError(
                f"jitter_frames must be within 0-{MAX_JITTER_FRAMES}, got {self.jitter_frames}"
            )

    @classmethod
    def from_env(cls, environ: Environ) -> BotConfig:
        return cls(
            bot=BOT.read(environ),
            media=MediaConfig.from_env(environ),
            idle_timeout=IDLE_TIMEOUT.read(environ),
            max_call_seconds=MAX_CALL_SECONDS.read(environ),
            faults=FAULTS.read(environ),
        )


@dataclass(frozen=True)
class PostCallConfig:
    """Settings of the rq job that runs after each call (summary, webhook)."""

    redis_url: str = REDIS_URL.default
    providers: ProviderConfig = field(default_factory=ProviderConfig)
    webhook_url: str = ""
    webhook_secret: str = ""
    webhook_attempts: int = WEBHOOK_ATTEMPTS
    #: Seconds before the first retry; doubles after each failed attempt.
    webhook_backoff: float = WEBHOOK_BACKOFF
    webhook_timeout: float = WEBHOOK_TIMEOUT

    def __repr__(self) -> str:
        return (
            f"PostCallConfig(redis_url=<hidden>, llm={self.providers.llm!r}, "
            f"webhook_url={self.webhook_url!r})"
        )

    @classmethod
    def from_env(cls, environ: Environ) -> PostCallConfig:
        return cls(
            redis_url=REDIS_URL.read(environ),
            providers=ProviderConfig.from_env(environ),
            webhook_url=WEBHOOK_URL.read(environ),
            webhook_secret=WEBHOOK_SECRET.read(environ),
        )
