"""Builds the STT, LLM and TTS services a bot's pipeline uses, from its ProviderConfig.

``openai`` reaches OpenAI or any OpenAI-compatible server through ``OPENAI_BASE_URL``;
``elevenlabs`` is ElevenLabs' streaming WebSocket TTS; ``offline`` needs no key and no
network (pocketsphinx, a scripted LLM, espeak-ng).

The OpenAI services of one bot share one HTTP client: one TLS setup while the bot warms up
instead of three, and one pool of connections, so the first turn's STT request leaves a
connection warm for its LLM and TTS requests. Its TLS context is built once, in the zygote
(:data:`TLS_CONTEXT`), and inherited by every bot.

A new connection costs a bot 10-25 ms (40 ms when measured inside a call), the first turn's
requests would each pay it: :func:`preconnect` opens them while the caller's audio is still
connecting.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx2
import openai
from loguru import logger
from pipecat.services.llm_service import LLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from bots.config import ProviderConfig

__all__ = ["TLS_CONTEXT", "make_http_client", "make_llm", "make_stt", "make_tts", "preconnect"]

#: Connections a turn uses at once: the LLM's stream is still open when TTS starts.
PRECONNECTIONS = 2
#: Where the openai client goes without ``OPENAI_BASE_URL``.
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"

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


async def preconnect(http: httpx2.AsyncClient, providers: ProviderConfig) -> None:
    """Leave ``PRECONNECTIONS`` connections to the OpenAI-compatible server in ``http``'s pool.

    Each is opened by a ``GET /models`` (listed by OpenAI and most compatible servers; free,
    and any answer leaves the connection open). A failure is only logged: the turn's own
    requests will connect as they would have.
    """
    url = f"{(providers.openai_base_url or OPENAI_DEFAULT_URL).rstrip('/')}/models"
    headers = {"Authorization": f"Bearer {providers.openai_client_key}"}
    replies = await asyncio.gather(
        *(http.get(url, headers=headers) for _ in range(PRECONNECTIONS)), return_exceptions=True
    )
    for reply in replies:
        if isinstance(reply, BaseException):
            logger.info(f"could not pre-connect to the provider: {reply!r}")
        elif reply.status_code >= 400:
            logger.debug(f"pre-connect: GET /models answered {reply.status_code}")


class _OpenAILLM(OpenAILLMService):
    """pipecat's OpenAI LLM service on a given HTTP client (its own builds a new one)."""

    def __init__(self, *, http_client: httpx2.AsyncClient, **kwargs: Any) -> None:
        self._http_client = http_client  # read by create_client, which __init__ calls
        super().__init__(**kwargs)

    def create_client(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        default_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            http_client=self._http_client,
            default_headers=default_headers,
        )


def make_stt(
    providers: ProviderConfig, http_client: httpx2.AsyncClient | None = None
) -> STTService:
    if providers.stt == "openai":
        from pipecat.services.openai.stt import OpenAISTTService

        return OpenAISTTService(
            api_key=providers.openai_client_key,
            base_url=providers.openai_base_url or None,
            http_client=http_client or make_http_client(),
            settings=OpenAISTTService.Settings(model=providers.openai_stt_model),
        )
    from bots.providers.offline_stt import PocketsphinxSTTService

    return PocketsphinxSTTService()


def make_llm(
    providers: ProviderConfig, http_client: httpx2.AsyncClient | None = None
) -> LLMService[Any]:
    if providers.llm == "openai":
        return _OpenAILLM(
            http_client=http_client or make_http_client(),
            api_key=providers.openai_client_key,
            base_url=providers.openai_base_url or None,
            settings=OpenAILLMService.Settings(model=providers.openai_llm_model),
        )
    from bots.providers.offline_llm import ScriptedLLMService

    return ScriptedLLMService()


def make_tts(
    providers: ProviderConfig, http_client: httpx2.AsyncClient | None = None
) -> TTSService:
    if providers.tts == "openai":
        from pipecat.services.openai.tts import OpenAITTSService

        return OpenAITTSService(
            api_key=providers.openai_client_key,
            base_url=providers.openai_base_url or None,
            http_client=http_client or make_http_client(),
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
