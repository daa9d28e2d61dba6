"""The fake ElevenLabs server against the real clients: pipecat's ElevenLabsTTSService, built
as the bot builds it, and the ``websockets`` client for protocol details pipecat does not use."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import run_test
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from benchmarks.fakes.elevenlabs_server import FakeElevenLabs, run_fake_elevenlabs
from bots.config import ProviderConfig
from bots.services import make_tts

ROOT = Path(__file__).resolve().parent.parent
KEY = "el-test-key"
GREETING = "Hello! This is the fake ElevenLabs voice speaking."
#: Every pipecat run here finishes in well under this; a hang fails fast instead.
RUN_TIMEOUT = 15.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabs]:
    async with run_fake_elevenlabs(api_key=KEY) as server:
        yield server


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def _run_tts(
    url: str, frames: Sequence[Frame], *, api_key: str = KEY, sample_rate: int = 24_000
) -> tuple[Sequence[Frame], Sequence[Frame]]:
    providers = ProviderConfig(tts="elevenlabs", elevenlabs_api_key=api_key, elevenlabs_url=url)
    return await asyncio.wait_for(
        run_test(
            make_tts(providers),
            frames_to_send=frames,
            pipeline_params=PipelineParams(audio_out_sample_rate=sample_rate),
        ),
        RUN_TIMEOUT,
    )


def _audio(frames: Sequence[Frame]) -> list[TTSAudioRawFrame]:
    return [f for f in frames if isinstance(f, TTSAudioRawFrame)]


def _errors(*frame_lists: Sequence[Frame]) -> list[ErrorFrame]:
    return [f for frames in frame_lists for f in frames if isinstance(f, ErrorFrame)]


async def test_speak_frame_through_make_tts(fake: FakeElevenLabs) -> None:
    down, up = await _run_tts(fake.url, [TTSSpeakFrame(GREETING)])
    assert not _errors(down, up)
    audio = _audio(down)
    pcm = b"".join(f.audio for f in audio)
    assert {(f.sample_rate, f.num_channels) for f in audio} == {(24_000, 1)}
    assert len(pcm) > 24_000 * 2  # over a second of speech
    assert _rms(pcm) > 300
    assert fake.texts == [GREETING]
    (connection,) = fake.connections
    defaults = ProviderConfig()
    assert connection.voice_id == defaults.elevenlabs_voice_id
    assert connection.query["model_id"] == defaults.elevenlabs_model
    assert connection.query["output_format"] == "pcm_24000"
    assert connection.authorized
    # pipecat ends with close_socket, which the fake answers with a normal close.
    assert connection.close_code == 1000
    (context,) = fake.contexts
    assert context.closed and context.final_sent and context.flushes == 1
    assert context.audio_bytes == len(pcm)


async def test_llm_text_frames_get_audio_and_word_times(fake: FakeElevenLabs) -> None:
    frames: list[Frame] = [
        LLMFullResponseStartFrame(),
        TextFrame("The weather "),
        TextFrame("is sunny. "),
        TextFrame("Bye now."),
        LLMFullResponseEndFrame(),
    ]
    down, up = await _run_tts(fake.url, frames, sample_rate=16_000)
    assert not _errors(down, up)
    audio = _audio(down)
    assert audio and all(f.sample_rate == 16_000 for f in audio)
    assert _rms(b"".join(f.audio for f in audio)) > 300
    assert fake.connections[0].query["output_format"] == "pcm_16000"
    assert " ".join(fake.texts) == "The weather is sunny. Bye now."
    # pipecat times the words it reports from the fake's character alignment.
    words = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert words == "The weather is sunny. Bye now.".split()
    # One turn is one context, whatever the number of sentences.
    (context,) = fake.contexts
    assert context.final_sent


async def test_wrong_key_is_an_error_not_a_hang(fake: FakeElevenLabs) -> None:
    down, up = await _run_tts(fake.url, [TTSSpeakFrame(GREETING)], api_key="el-wrong")
    assert _errors(down, up)
    assert not _audio(down)
    assert fake.texts == []
    assert fake.connections
    assert {(c.close_code, c.close_reason) for c in fake.connections} == {(1008, "Invalid API key")}


async def test_wrong_key_refused_at_handshake(fake: FakeElevenLabs) -> None:
    fake.options.auth_failure = "handshake"
    down, up = await _run_tts(fake.url, [TTSSpeakFrame(GREETING)], api_key="el-wrong")
    assert any("403" in f.error for f in _errors(down, up))
    assert not _audio(down)
    assert all(c.refused for c in fake.connections)


def _endpoint(url: str, **query: str) -> str:
    params = {"model_id": "eleven_flash_v2_5", "output_format": "pcm_16000", **query}
    return f"{url}/v1/text-to-speech/voice-1/multi-stream-input?" + "&".join(
        f"{k}={v}" for k, v in params.items()
    )


async def _send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def _until_final(ws: ClientConnection, context_id: str) -> list[dict[str, Any]]:
    """The audio messages of ``context_id`` up to its ``isFinal``."""
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(RUN_TIMEOUT):
        while True:
            message = json.loads(await ws.recv())
            if message.get("contextId") != context_id:
                continue
            if message.get("isFinal"):
                return received
            received.append(message)


async def test_buffering_flush_keepalive_and_close_context(fake: FakeElevenLabs) -> None:
    headers = {"xi-api-key": KEY}
    async with connect(_endpoint(fake.url), additional_headers=headers) as ws:
        # Without auto_mode, text waits for a flush (or 120 characters).
        await _send(ws, text=" ", context_id="a", voice_settings={"speed": 1.1})
        await _send(ws, text="Short text waits. ", context_id="a")
        await _send(ws, text="", context_id="a")  # keep-alive
        await _send(ws, text="")  # a context-less keep-alive, as pipecat sends
        await _send(ws, context_id="a", flush=True)
        await _send(ws, text="Never flushed. ", context_id="a")
        await _send(ws, context_id="a", close_context=True)
        messages = await _until_final(ws, "a")
    assert messages
    pcm = b"".join(base64.b64decode(m["audio"]) for m in messages)
    assert _rms(pcm) > 300
    chars = "".join(c for m in messages for c in m["alignment"]["chars"])
    assert chars == " Short text waits. "
    for m in messages:
        alignment = m["alignment"]
        assert alignment["charStartTimesMs"][0] == 0
        chunk_ms = len(base64.b64decode(m["audio"])) / 2 / 16
        end_ms = alignment["charStartTimesMs"][-1] + alignment["charDurationsMs"][-1]
        assert abs(end_ms - chunk_ms) <= 1
    (context,) = fake.contexts
    assert context.generations == [" Short text waits. "]  # the unflushed text is dropped
    assert context.voice_settings == {"speed": 1.1}
    assert fake.keepalives == 2
    assert fake.texts == ["Short text waits. ", "Never flushed. "]


async def test_chunk_schedule_and_key_in_first_message(fake: FakeElevenLabs) -> None:
    async with connect(_endpoint(fake.url)) as ws:
        # Without a header, the key may come in the context's first message.
        await _send(ws, text=" ", context_id="b", xi_api_key=KEY)
        await _send(ws, text="word " * 20, context_id="b")  # 101 characters buffered
        await _send(ws, text="word " * 10, context_id="b")  # 151: past the first threshold
        await _send(ws, text="tail ", context_id="b")  # short of the next one, never spoken
        await _send(ws, context_id="b", close_context=True)
        messages = await _until_final(ws, "b")
    assert messages
    assert fake.contexts[0].generations == [" " + "word " * 30]
    assert fake.connections[0].authorized


async def test_policy_violations_close_with_1008(fake: FakeElevenLabs) -> None:
    async def close_reason(url: str, *messages: dict[str, Any]) -> str:
        async with connect(url, additional_headers={"xi-api-key": KEY}) as ws:
            for message in messages:
                await _send(ws, **message)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(RUN_TIMEOUT):
                    while True:
                        await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        return closed.value.rcvd.reason

    url = _endpoint(fake.url, auto_mode="true")
    changed = await close_reason(
        url,
        {"text": " ", "context_id": "c", "voice_settings": {"speed": 1.0}},
        {"text": "Hi. ", "context_id": "c", "voice_settings": {"speed": 1.2}},
    )
    assert changed.startswith("voice_settings field must be provided in the first message")
    too_many = await close_reason(url, *({"text": " ", "context_id": str(i)} for i in range(6)))
    assert "contexts (5)" in too_many
    fake.options.inactivity_timeout = 0.3
    idle = await close_reason(url)
    # Like the real service's, the reason is cut to the 123 bytes a close frame can carry.
    assert idle.startswith("Have not received a new text input within the timeout of 0.3")
    assert len(idle.encode()) == 123
    with pytest.raises(InvalidStatus, match="403"):
        async with connect(_endpoint(fake.url, model_id="eleven_v3")):
            pass


async def test_runs_as_a_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.fakes.elevenlabs_server",
        "--port",
        "0",
        "--api-key",
        KEY,
        "--speech-engine",
        "tone",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        url = line.decode().strip()
        assert url.startswith("ws://127.0.0.1:")
        down, up = await _run_tts(url, [TTSSpeakFrame("From a process.")])
        assert not _errors(down, up)
        assert _rms(b"".join(f.audio for f in _audio(down))) > 300
        async with httpx.AsyncClient() as http:
            report = (await http.get(url.replace("ws://", "http://") + "/_fake/report")).json()
        assert report["texts"] == ["From a process."]
        assert report["connections"][0]["close_code"] == 1000
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0, stderr.decode()
