"""Builds the STT, LLM and TTS services a bot's pipeline uses, from its ProviderConfig.

``openai`` reaches OpenAI or any OpenAI-compatible server through ``OPENAI_BASE_URL``;
``elevenlabs`` is ElevenLabs' streaming WebSocket TTS; ``offline`` needs no key and no
network (pocketsphinx, a scripted LLM, espeak-ng).

The OpenAI services of one bot share one HTTP client (:class:`OpenAISession`): one pool of
connections, so the first turn's STT request leaves a connection warm for its LLM and TTS
requests. Its TLS context is built once, in the zygote (:data:`TLS_CONTEXT`), and inherited
by every bot.

A new connection to the provider (TCP, TLS) and a client's first request (which reads the
platform name in a worker thread) would otherwise both be paid inside the first turn:
:func:`preconnect` pays them while the caller's audio is still connecting.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from loguru import logger
from pipecat.services.llm_service import LLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from bots.config import ProviderConfig

__all__ = [
    "TLS_CONTEXT",
    "OpenAISession",
    "make_http_client",
    "make_llm",
    "make_stt",
    "make_tts",
    "preconnect",
]

#: Connections a turn uses at once: the LLM's stream is still open when TTS starts.
PRECONNECTIONS = 2
#: Audio the OpenAI TTS service reads before it pushes a frame: pipecat's default, half a
#: second, holds the reply back until that much has arrived, however fast the server streams.
#: A server that streams slower than real time would stutter after any head start; one that
#: streams faster needs none.
TTS_READ_SECONDS = 0.1

#: Certificate authorities loaded once per zygote (the OpenAI client's default).
TLS_CONTEXT: ssl.SSLContext = httpx2.create_ssl_context()


def make_http_client() -> httpx2.AsyncClient:
    """The HTTP client a bot's OpenAI services share (pipecat's pool limits)."""
    return openai.DefaultAsyncHttpxClient(
        verify=TLS_CONTEXT,
        limits=httpx2.Limits(
            max_keepalive_connections=100, max_connections=1000, keepalive_expiry=None
        ),
    )


@dataclass(frozen=True)
class OpenAISession:
    """The HTTP client a bot's OpenAI services share, and the OpenAI client of its LLM."""

    client: openai.AsyncOpenAI
    http: httpx2.AsyncClient

    @classmethod
    def open(cls, providers: ProviderConfig) -> OpenAISession:
        http = make_http_client()
        client = openai.AsyncOpenAI(
            api_key=providers.openai_client_key,
            base_url=providers.openai_base_url or None,
            http_client=http,
        )
        return cls(client, http)


async def preconnect(session: OpenAISession) -> None:
    """Leave ``PRECONNECTIONS`` connections to the OpenAI-compatible server in the session's
    pool, then make the client's first request (which reads the platform name).

    Each is a ``GET /models`` (listed by OpenAI and most compatible servers; free, and any
    answer leaves the connection open). A failure is only logged: the turn's own requests
    will connect as they would have.
    """
    url, headers = session.client.base_url.join("models"), session.client.auth_headers
    replies: list[object] = await asyncio.gather(
        *(session.http.get(url, headers=headers) for _ in range(PRECONNECTIONS)),
        return_exceptions=True,
    )
    try:
        await session.client.models.list()
    except openai.OpenAIError as error:
        replies.append(error)
    for reply in replies:
        if isinstance(reply, httpx2.Response | openai.APIStatusError):
            if reply.status_code >= 400:
                logger.debug(f"pre-connect: GET /models answered {reply.status_code}")
        elif isinstance(reply, BaseException):
            logger.info(f"could not pre-connect to the provider: {reply!r}")


class _OpenAILLM(OpenAILLMService):
    """pipecat's OpenAI LLM service on a given client (its own builds a new one)."""

    def __init__(self, *, client: openai.AsyncOpenAI, **kwargs: Any) -> None:
        self._given_client = client  # returned by create_client, which __init__ calls
        super().__init__(**kwargs)

    def create_client(self, *args: Any, **kwargs: Any) -> openai.AsyncOpenAI:
        return self._given_client


class _OpenAITTS(OpenAITTSService):
    """pipecat's OpenAI TTS service, pushing audio as each ``TTS_READ_SECONDS`` arrives."""

    @property
    def chunk_size(self) -> int:
        return int(self.sample_rate * TTS_READ_SECONDS) * 2  # s16le


def make_stt(providers: ProviderConfig, session: OpenAISession | None = None) -> STTService:
    if providers.stt == "openai":
        from pipecat.services.openai.stt import OpenAISTTService

        session = session or OpenAISession.open(providers)
        return OpenAISTTService(
            api_key=providers.openai_client_key,
            base_url=providers.openai_base_url or None,
            http_client=session.http,
            settings=OpenAISTTService.Settings(model=providers.openai_stt_model),
        )
    from bots.providers.offline_stt import PocketsphinxSTTService

    return PocketsphinxSTTService()


def make_llm(
    providers: ProviderConfig, session: OpenAISession | None = None, *, system_prompt: str = ""
) -> LLMService[Any]:
    """The LLM, with ``system_prompt`` as its system instruction (where pipecat composes it
    with the instructions it adds itself) rather than as a first message of the context."""
    if providers.llm == "openai":
        return _OpenAILLM(
            client=(session or OpenAISession.open(providers)).client,
            settings=OpenAILLMService.Settings(
                model=providers.openai_llm_model, system_instruction=system_prompt or None
            ),
        )
    from bots.providers.offline_llm import ScriptedLLMService

    return ScriptedLLMService()


def make_tts(providers: ProviderConfig, session: OpenAISession | None = None) -> TTSService:
    if providers.tts == "openai":
        session = session or OpenAISession.open(providers)
        return _OpenAITTS(
            api_key=providers.openai_client_key,
            base_url=providers.openai_base_url or None,
            http_client=session.http,
            settings=OpenAITTSService.Settings(
                model=providers.openai_tts_model, voice=providers.openai_tts_voice
            ),
        )
    if providers.tts == "elevenlabs":
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

        return ElevenLabsTTSService(
            api_key=providers.elevenlabs_api_key,
            url=providers.elevenlabs_url,
            settings=ElevenLabsTTSService.Settings(
                model=providers.elevenlabs_model, voice=providers.elevenlabs_voice_id
            ),
        )
    from bots.providers.espeak_tts import EspeakTTSService

    return EspeakTTSService()
