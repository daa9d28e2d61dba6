"""A rehearsal of the OpenAI client's requests, so that a call's first turn finds them warm.

The openai client builds much of what a request needs on first use: the type hints of each
parameter type it converts (one ``typing.get_type_hints`` per TypedDict, message kind and
nested part, cached for the process), the response models' parsers, the server-sent events
decoder, and the modules it imports lazily. In a bot, that first use would fall in the first
turn, whose LLM and TTS requests are on the voice-to-voice path, and in the greeting's TTS
request, on the way to the first word.

:func:`rehearse_requests` (run by the zygote, from :mod:`bots.preload`) makes once each
request a bot makes — the model list it pre-connects with, a transcription, a streamed chat
completion and a streamed speech — with the parameters pipecat sends, through an in-memory
transport that answers as the API does. What they build is shared by every bot the zygote
forks. No socket is opened; only the openai client's public API is used.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2
import openai
from loguru import logger

__all__ = ["rehearse_requests"]

_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-rehearsal",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "rehearsal",
    "system_fingerprint": None,
}


def _chat_events() -> bytes:
    """A streamed reply as the API sends it: role, a token, stop, then the usage chunk."""
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Sure."}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            "choices": [],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        },
    ]
    events = [f"data: {json.dumps({**_CHUNK, **chunk})}\n\n" for chunk in chunks]
    return ("".join(events) + "data: [DONE]\n\n").encode()


def _answer(request: httpx2.Request) -> httpx2.Response:
    path = request.url.path
    if path.endswith("/chat/completions"):
        return httpx2.Response(
            200, content=_chat_events(), headers={"content-type": "text/event-stream"}
        )
    if path.endswith("/audio/speech"):
        return httpx2.Response(200, content=bytes(4800), headers={"content-type": "audio/pcm"})
    if path.endswith("/models"):
        model = {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "rehearsal"}
        return httpx2.Response(200, json={"object": "list", "data": [model]})
    if path.endswith("/audio/transcriptions"):
        return httpx2.Response(200, json={"text": "rehearsal", "logprobs": []})
    return httpx2.Response(404, json={"error": {"message": f"no rehearsal for {path}"}})


async def _requests() -> None:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(_answer))
    client = openai.AsyncOpenAI(
        api_key="rehearsal", base_url="http://rehearsal/v1", http_client=http
    )
    async with http:
        # As a bot pre-connects (bots.services.preconnect), then in a turn's order, with
        # the parameters pipecat's services send.
        await client.models.list()
        await client.audio.transcriptions.create(
            file=("audio.wav", bytes(44), "audio/wav"),
            model="gpt-4o-mini-transcribe",
            language="en",
            response_format="json",
            include=["logprobs"],
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            stream=True,
            stream_options={"include_usage": True},
            messages=[
                {"role": "system", "content": "rehearsal"},
                {"role": "user", "content": "rehearsal"},
                {"role": "assistant", "content": "rehearsal"},
                {"role": "user", "content": "rehearsal"},
            ],
        )
        async for _chunk in stream:
            pass
        async with client.audio.speech.with_streaming_response.create(
            input="rehearsal", model="gpt-4o-mini-tts", voice="alloy", response_format="pcm"
        ) as speech:
            async for _audio in speech.iter_bytes(1024):
                pass


def rehearse_requests() -> None:
    """The requests, on an event loop of their own (the zygote's).

    The client reads the platform name in the loop's default executor; its thread is joined
    before the loop closes, so the zygote forks with no thread but its own. A failure (an
    answer a later client version no longer accepts) is only logged.
    """
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_requests())
    except Exception as error:  # a speed-up only: bots then warm these on their first turn
        logger.warning(f"the OpenAI request rehearsal failed: {error!r}")
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
