"""The fake OpenAI server against the real clients: the ``openai`` package and pipecat's
OpenAI STT, LLM and TTS services."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from benchmarks.fakes.audio import SPEECH_SAMPLE_RATE, parse_wav, tone_speech, wav_bytes
from benchmarks.fakes.openai_payloads import tool_result_text
from benchmarks.fakes.openai_server import (
    DEFAULT_TRANSCRIPT,
    FakeOpenAI,
    _parse_args,
    run_fake_openai,
)
from bots.config import ProviderConfig
from bots.services import (
    PRECONNECTIONS,
    OpenAISession,
    make_llm,
    make_stt,
    make_tts,
    preconnect,
)

ROOT = Path(__file__).resolve().parent.parent
WEATHER = "It is sunny and warm today."


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with run_fake_openai() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake.base_url, api_key="test-key", max_retries=0) as c:
        yield c


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def _speech_wav(text: str = "what is the weather like today") -> bytes:
    return wav_bytes(tone_speech(text), SPEECH_SAMPLE_RATE)


async def test_transcription_json(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    upload = _speech_wav()
    result = await client.audio.transcriptions.create(
        file=("audio.wav", upload, "audio/wav"), model="gpt-4o-transcribe", language="en"
    )
    assert result.text == DEFAULT_TRANSCRIPT
    assert fake.requests["/v1/audio/transcriptions"] == 1
    (received,) = fake.transcriptions
    assert received.audio_bytes == len(upload)
    assert received.filename == "audio.wav"
    assert received.audio_duration == pytest.approx(parse_wav(upload).duration)
    assert received.fields["model"] == ["gpt-4o-transcribe"]
    assert received.fields["language"] == ["en"]


async def test_transcription_formats(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.options.transcript = "hello there"
    audio = ("audio.wav", _speech_wav(), "audio/wav")
    with_logprobs = await client.audio.transcriptions.create(
        file=audio, model="gpt-4o-transcribe", response_format="json", include=["logprobs"]
    )
    assert with_logprobs.logprobs is not None
    assert [p.token for p in with_logprobs.logprobs] == ["hello ", "there"]
    verbose = await client.audio.transcriptions.create(
        file=audio, model="whisper-1", response_format="verbose_json"
    )
    assert verbose.text == "hello there"
    assert verbose.segments is not None and verbose.segments[0].avg_logprob < 0
    assert verbose.duration > 0
    text = await client.audio.transcriptions.create(
        file=audio, model="whisper-1", response_format="text"
    )
    assert text.strip() == "hello there"


async def test_streaming_chat_with_usage(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are a voice assistant."},
        {"role": "user", "content": "What is the weather like today?"},
    ]
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    usage = None
    finish = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == WEATHER
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == len(WEATHER.split())
    assert fake.chat_messages == [messages]
    assert fake.requests["/v1/chat/completions"] == 1


async def test_streaming_chat_without_usage_sends_no_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: hello."


async def test_chat_non_streaming_and_summary_prompt(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Summarize this phone call."},
            {"role": "user", "content": "Caller: book a table for two\nAssistant: Done."},
        ],
    )
    assert completion.object == "chat.completion"
    assert (
        completion.choices[0].message.content == 'Summary: the caller said "book a table for two".'
    )
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_first_token_delay(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.options.first_token_delay = 0.3
    fake.options.reply = "Fixed reply."
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    first = None
    text = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.monotonic() - started
            text += chunk.choices[0].delta.content
    assert first is not None and first >= 0.3
    assert text == "Fixed reply."


async def test_speech_pcm_is_speech_and_scales_with_text(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    async def speak(text: str) -> bytes:
        async with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", input=text, voice="alloy", response_format="pcm"
        ) as response:
            assert response.status_code == 200
            return b"".join([chunk async for chunk in response.iter_bytes(4096)])

    short = await speak("Hello.")
    long = await speak("Hello, this is a much longer sentence, spoken by the fake server.")
    assert len(short) % 2 == 0 and len(short) > 0.2 * SPEECH_SAMPLE_RATE * 2
    assert len(long) > 2 * len(short)
    assert _rms(short) > 300 and _rms(long) > 300
    assert fake.speech_inputs[0] == "Hello."


async def test_speech_wav_and_first_byte_delay(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.options.speech_first_byte_delay = 0.3
    fake.options.speech_engine = "tone"
    started = time.monotonic()
    async with client.audio.speech.with_streaming_response.create(
        model="tts-1", input="Testing one two three.", voice="nova", response_format="wav"
    ) as response:
        chunks = [chunk async for chunk in response.iter_bytes()]
    assert time.monotonic() - started >= 0.3
    audio = parse_wav(b"".join(chunks))
    assert audio.sample_rate == SPEECH_SAMPLE_RATE and audio.channels == 1
    assert audio.duration > 0.5 and _rms(audio.pcm) > 300


async def test_bad_requests_get_openai_errors(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as chat_error:
        await client.chat.completions.create(model="m", messages=[])
    assert chat_error.value.status_code == 400
    assert chat_error.value.param == "messages"
    with pytest.raises(openai.BadRequestError, match="the fake serves 'pcm' and 'wav'"):
        await client.audio.speech.create(model="tts-1", input="hi", voice="alloy")
    with pytest.raises(openai.BadRequestError, match="'file'"):
        await client.audio.transcriptions.create(file=("a.wav", b"", "audio/wav"), model="m")
    async with httpx.AsyncClient() as http:
        garbage = await http.post(f"{fake.base_url}/chat/completions", content=b"{not json")
        missing = await http.post(f"{fake.base_url}/embeddings", json={})
    assert garbage.status_code == 400
    assert garbage.json()["error"]["type"] == "invalid_request_error"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "unknown_url"
    assert fake.requests["/v1/chat/completions"] == 2


async def test_api_key_enforced_when_configured() -> None:
    async with run_fake_openai(api_key="sk-right") as fake:
        async with AsyncOpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                await bad.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}]
                )
        async with AsyncOpenAI(base_url=fake.base_url, api_key="sk-right") as good:
            reply = await good.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
    assert reply.choices[0].message.content == "You said: hi."


async def test_runs_as_a_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.fakes.openai_server",
        "--port",
        "0",
        "--reply",
        "From a process.",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        base_url = line.decode().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        async with AsyncOpenAI(base_url=base_url, api_key="x") as client:
            reply = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        assert reply.choices[0].message.content == "From a process."
        async with httpx.AsyncClient() as http:
            report = (await http.get(base_url.removesuffix("/v1") + "/_fake/requests")).json()
        assert report["requests"] == {"/v1/chat/completions": 1}
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0, stderr.decode()


async def test_pipecat_openai_tts(fake: FakeOpenAI) -> None:
    from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.services.openai.tts import OpenAITTSService
    from pipecat.tests.utils import run_test

    tts = OpenAITTSService(
        api_key="test-key",
        base_url=fake.base_url,
        settings=OpenAITTSService.Settings(model="gpt-4o-mini-tts", voice="alloy"),
    )
    down, up = await run_test(tts, frames_to_send=[TTSSpeakFrame(WEATHER)])
    audio = b"".join(f.audio for f in down if isinstance(f, TTSAudioRawFrame))
    assert not [f for f in [*down, *up] if isinstance(f, ErrorFrame)]
    assert len(audio) > SPEECH_SAMPLE_RATE  # over half a second of 24 kHz s16le
    assert _rms(audio) > 300
    assert fake.speech_requests[0]["response_format"] == "pcm"
    assert fake.speech_inputs == [WEATHER]


async def test_the_bot_tts_pushes_audio_as_it_arrives(fake: FakeOpenAI) -> None:
    from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame
    from pipecat.tests.utils import run_test

    providers = ProviderConfig(tts="openai", openai_api_key="k", openai_base_url=fake.base_url)
    tts = make_tts(providers)
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame(WEATHER)])
    frames = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    # pipecat's own default waits for half a second of audio (24,000 bytes at 24 kHz) before
    # its first frame; the bot's pushes each 100 ms as it arrives.
    assert len(frames[0].audio) == 4_800 == tts.chunk_size
    assert sum(len(f.audio) for f in frames) > SPEECH_SAMPLE_RATE


async def test_pipecat_openai_llm(fake: FakeOpenAI) -> None:
    from pipecat.frames.frames import LLMContextFrame, LLMTextFrame
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.tests.utils import run_test

    fake.options.first_token_delay = 0.05
    llm = OpenAILLMService(
        api_key="test-key",
        base_url=fake.base_url,
        settings=OpenAILLMService.Settings(
            model="gpt-4o-mini", system_instruction="You are a voice assistant."
        ),
    )
    context = LLMContext(messages=[{"role": "user", "content": DEFAULT_TRANSCRIPT}])
    down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context)])
    text = "".join(f.text for f in down if isinstance(f, LLMTextFrame))
    assert text == WEATHER
    (request,) = fake.chat_requests
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert request["messages"][0] == {"role": "system", "content": "You are a voice assistant."}


async def test_pipecat_openai_stt(fake: FakeOpenAI) -> None:
    from pipecat.frames.frames import (
        InputAudioRawFrame,
        TranscriptionFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.services.openai.stt import OpenAISTTService
    from pipecat.tests.utils import run_test

    stt = OpenAISTTService(
        api_key="test-key",
        base_url=fake.base_url,
        settings=OpenAISTTService.Settings(model="gpt-4o-transcribe"),
        sample_rate=16_000,
    )
    speech = tone_speech("what is the weather like today", sample_rate=16_000)
    frames = [
        InputAudioRawFrame(audio=speech[i : i + 640], sample_rate=16_000, num_channels=1)
        for i in range(0, len(speech), 640)
    ]
    down, _ = await run_test(
        stt,
        frames_to_send=[VADUserStartedSpeakingFrame(), *frames, VADUserStoppedSpeakingFrame()],
    )
    transcripts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert transcripts == [DEFAULT_TRANSCRIPT]
    (received,) = fake.transcriptions
    assert received.fields["model"] == ["gpt-4o-transcribe"]
    assert received.audio_duration >= len(speech) / 32_000


async def test_models_list(client: AsyncOpenAI) -> None:
    models = [model.id async for model in client.models.list()]
    assert "gpt-4o-mini" in models


async def test_preconnect_leaves_connections_for_the_first_turn() -> None:
    async with run_fake_openai(api_key="sk-right") as fake:
        providers = ProviderConfig(openai_api_key="sk-right", openai_base_url=fake.base_url)
        session = OpenAISession.open(providers)
        async with session.http:
            await preconnect(session)
            # The connections, then the client's own first request on one of them.
            assert fake.requests["/v1/models"] == PRECONNECTIONS + 1
            pool = session.http._transport._pool  # type: ignore[attr-defined]
            assert len(pool.connections) == PRECONNECTIONS
            # The client's first request is behind it: the turn's do not read the platform
            # name (in a worker thread) again.
            assert session.client._platform is not None
            # The turn's requests take those connections instead of opening their own.
            await session.client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert len(pool.connections) == PRECONNECTIONS


async def test_services_share_the_session_connections() -> None:
    providers = ProviderConfig(
        stt="openai", llm="openai", tts="openai", openai_base_url="http://127.0.0.1:9/v1"
    )
    session = OpenAISession.open(providers)
    async with session.http:
        services: list[Any] = [make(providers, session) for make in (make_stt, make_llm, make_tts)]
        stt, llm, tts = services
        assert llm._client is session.client
        # STT and TTS build OpenAI clients of their own, on the session's HTTP client.
        assert stt._client._client is session.http and tts._client._client is session.http


async def test_preconnect_failures_are_only_logged() -> None:
    # Nothing listens on port 9 (discard) of loopback here: the connections are refused.
    providers = ProviderConfig(openai_base_url="http://127.0.0.1:9/v1")
    session = OpenAISession.open(providers)
    async with session.http:
        await preconnect(session)


BOOKING = ("book_table", json.dumps({"name": "Ann", "party_size": 2, "time": "7 pm"}))
BOOK_TABLE_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "book_table",
        "description": "Book a table.",
        "parameters": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "party_size": {"type": "integer"},
                "time": {"type": "string"},
            },
            "required": ["name", "party_size", "time"],
        },
    },
}
BOOKING_REQUEST: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a restaurant host."},
    {"role": "user", "content": "I'd like to book a table for two at seven."},
]


async def test_streaming_tool_call_in_openai_format(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.options.tool_call = BOOKING
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=BOOKING_REQUEST,
        tools=[BOOK_TABLE_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    calls = [call for delta in deltas for call in delta.tool_calls or []]
    # The first piece names the call; the rest carry only argument text, at the same index.
    first, *rest = calls
    assert first.index == 0 and first.id and first.id.startswith("call_")
    assert first.type == "function"
    assert first.function is not None and first.function.name == "book_table"
    assert first.function.arguments == ""
    assert len(rest) > 1
    assert all(c.index == 0 and c.id is None and c.function is not None for c in rest)
    arguments = "".join(c.function.arguments or "" for c in rest if c.function is not None)
    assert json.loads(arguments) == {"name": "Ann", "party_size": 2, "time": "7 pm"}
    assert not any(delta.content for delta in deltas)
    assert finish[-1] == "tool_calls" and set(finish[:-1]) == {None}
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert fake.tool_calls == 1


async def test_non_streamed_tool_call(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.options.tool_call = BOOKING
    completion = await client.chat.completions.create(
        model="gpt-4o-mini", messages=BOOKING_REQUEST, tools=[BOOK_TABLE_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "book_table"
    assert json.loads(call.function.arguments)["party_size"] == 2


async def test_tool_result_is_answered_in_words(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.options.tool_call = BOOKING
    messages: list[ChatCompletionMessageParam] = [
        *BOOKING_REQUEST,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": BOOKING[0], "arguments": BOOKING[1]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"confirmation": "K7Q2ZP"}'},
    ]
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[BOOK_TABLE_TOOL], stream=True
    )
    text = ""
    async for chunk in stream:
        for choice in chunk.choices:
            assert not choice.delta.tool_calls
            text += choice.delta.content or ""
    assert text == "Your table is booked, confirmation K7Q2ZP."
    assert fake.tool_calls == 0
    assert fake.chat_messages[0][-1]["role"] == "tool"


@pytest.mark.parametrize(
    ("content", "spoken"),
    [
        ('"AB12"', "AB12"),
        ('{"confirmation": "AB12", "name": "Ann"}', "AB12"),
        ('{"status": "ok"}', '{"status": "ok"}'),
        ("plain text", "plain text"),
    ],
)
def test_tool_result_text(content: str, spoken: str) -> None:
    assert tool_result_text(content) == spoken


async def test_tool_call_only_when_asked_for(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.options.tool_call = BOOKING

    async def reply(**kwargs: Any) -> str | None:
        completion = await client.chat.completions.create(model="m", **kwargs)
        choice = completion.choices[0]
        return "call" if choice.message.tool_calls else choice.message.content

    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    other_tool: ChatCompletionToolParam = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object"}},
    }
    # No tools declared, another tool declared, a message not asking, tool_choice "none".
    assert (
        await reply(messages=BOOKING_REQUEST)
        == "You said: I'd like to book a table for two at seven."
    )
    assert (await reply(messages=BOOKING_REQUEST, tools=[other_tool]) or "").startswith("You said")
    assert await reply(messages=hello, tools=[BOOK_TABLE_TOOL]) == "You said: hello."
    assert (
        await reply(messages=BOOKING_REQUEST, tools=[BOOK_TABLE_TOOL], tool_choice="none") or ""
    ).startswith("You said")
    assert fake.tool_calls == 0
    # The trigger is the test's to choose.
    fake.options.tool_call_when = r"\bhello\b"
    assert await reply(messages=hello, tools=[BOOK_TABLE_TOOL]) == "call"
    assert await reply(messages=BOOKING_REQUEST, tools=[BOOK_TABLE_TOOL]) != "call"
    assert fake.tool_calls == 1


def test_tool_call_command_line() -> None:
    args = _parse_args(["--tool-call", *BOOKING, "--tool-call-when", "reserve"])
    assert args.tool_call == BOOKING
    assert args.tool_call_when == "reserve"
    assert _parse_args([]).tool_call is None
    with pytest.raises(SystemExit):
        _parse_args(["--tool-call", "book_table", "{not json"])


async def test_pipecat_llm_calls_the_registered_function(fake: FakeOpenAI) -> None:
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import FunctionCallsStartedFrame, LLMContextFrame
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.services.llm_service import FunctionCallParams
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.tests.utils import run_test

    fake.options.tool_call = BOOKING
    llm = OpenAILLMService(
        api_key="test-key",
        base_url=fake.base_url,
        settings=OpenAILLMService.Settings(model="gpt-4o-mini"),
    )
    called: list[dict[str, Any]] = []

    async def book_table(params: FunctionCallParams) -> None:
        called.append(dict(params.arguments))
        await params.result_callback({"confirmation": "K7Q2ZP"})

    llm.register_function("book_table", book_table)
    schema = FunctionSchema(
        name="book_table",
        description="Book a table.",
        properties={"name": {"type": "string"}},
        required=["name"],
    )
    context = LLMContext(
        messages=[{"role": "user", "content": "Book a table for two, please."}],
        tools=ToolsSchema(standard_tools=[schema]),
    )
    down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context)])
    assert called == [{"name": "Ann", "party_size": 2, "time": "7 pm"}]
    (started,) = [f for f in down if isinstance(f, FunctionCallsStartedFrame)]
    assert [c.function_name for c in started.function_calls] == ["book_table"]
    (request,) = fake.chat_requests
    assert request["tools"][0]["function"]["name"] == "book_table"
