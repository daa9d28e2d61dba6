"""The offline providers: pocketsphinx STT, scripted LLM, espeak-ng TTS, alone and chained."""

from __future__ import annotations

import asyncio
import io
import os
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import soxr
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.user_start.vad_user_turn_start_strategy import VADUserTurnStartStrategy
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from bots.providers.espeak_tts import EspeakTTSService, read_wav_header
from bots.providers.offline_llm import (
    NO_INPUT_REPLY,
    ScriptedLLMService,
    last_user_text,
    scripted_reply,
)
from bots.providers.offline_stt import (
    DECODER_SAMPLE_RATE,
    PocketsphinxSTTService,
    wav_to_decoder_pcm,
)

FIXTURE = Path(__file__).parent / "fixtures" / "hello.wav"
# Words pocketsphinx reliably hears in the fixture ("hello what time is it a very").
FIXTURE_WORDS = ("hello", "what")

F = TypeVar("F", bound=Frame)


# --- harness -----------------------------------------------------------------------------


class FrameCollector(FrameProcessor):
    """Records every frame it sees, and passes it on."""

    def __init__(self, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self._direction = direction
        self._arrived: asyncio.Event = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self._direction:
            self.frames.append(frame)
            self._arrived.set()
        await self.push_frame(frame, direction)

    def of_type(self, frame_type: type[F]) -> list[F]:
        return [f for f in self.frames if isinstance(f, frame_type)]

    async def wait_for(self, frame_type: type[Frame], count: int = 1, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while len(self.of_type(frame_type)) < count:
                self._arrived.clear()
                await self._arrived.wait()


class Harness:
    """A running pipeline of the given processors between an upstream and a downstream
    collector; frames are queued at its start."""

    def __init__(self, processors: Sequence[FrameProcessor], params: PipelineParams) -> None:
        self.up = FrameCollector(FrameDirection.UPSTREAM)
        self.down = FrameCollector(FrameDirection.DOWNSTREAM)
        self.worker = PipelineWorker(
            Pipeline([self.up, *processors, self.down]),
            params=params,
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        self._started = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        @self.worker.event_handler("on_pipeline_started")
        async def _started(_worker: PipelineWorker, _frame: Frame) -> None:
            self._started.set()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self._run_task = asyncio.create_task(runner.run())
        await asyncio.wait_for(self._started.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._run_task is not None
        if not self._run_task.done():
            await self.worker.queue_frame(EndFrame())
        await asyncio.wait_for(self._run_task, 30)

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.worker.queue_frame(frame)

    def errors(self) -> list[ErrorFrame]:
        return self.up.of_type(ErrorFrame) + self.down.of_type(ErrorFrame)


def fixture_pcm(sample_rate: int = DECODER_SAMPLE_RATE) -> bytes:
    with wave.open(str(FIXTURE), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        pcm = wav.readframes(wav.getnframes())
    if sample_rate == DECODER_SAMPLE_RATE:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    return np.asarray(soxr.resample(samples, DECODER_SAMPLE_RATE, sample_rate)).tobytes()


def speech_frames(pcm: bytes, sample_rate: int) -> list[Frame]:
    """The user's speech as a transport + VAD would deliver it: 20 ms frames between
    VAD start and stop."""
    step = sample_rate // 50 * 2
    audio: list[Frame] = [
        InputAudioRawFrame(pcm[i : i + step], sample_rate, 1) for i in range(0, len(pcm), step)
    ]
    return [VADUserStartedSpeakingFrame(), *audio, VADUserStoppedSpeakingFrame(stop_secs=0.2)]


def wav_bytes(samples: np.ndarray, sample_rate: int, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(pcm, dtype="<i2").astype(np.float64) ** 2)))


def espeak_children() -> list[str]:
    """Child processes of this test process that run espeak-ng, zombies included."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == me and comm.startswith("espeak"):
            found.append(f"{entry.name} {comm} {state}")
    return found


# --- STT -----------------------------------------------------------------------------------


def test_wav_to_decoder_pcm_downmixes_and_resamples() -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype("<i2")
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    pcm = wav_to_decoder_pcm(wav_bytes(stereo, 48000, channels=2))
    assert abs(len(pcm) // 2 - DECODER_SAMPLE_RATE) <= 16  # one second at 16 kHz
    assert 5000 < rms(pcm) < 6000  # the tone survived: 8000 / sqrt(2)


def test_wav_to_decoder_pcm_rejects_8_bit() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(bytes(800))
    with pytest.raises(ValueError, match="16-bit"):
        wav_to_decoder_pcm(buffer.getvalue())


async def test_pocketsphinx_recognises_fixture() -> None:
    stt = PocketsphinxSTTService()
    assert not stt.is_loaded  # construction is cheap; the model loads on first use
    frames = [frame async for frame in stt.run_stt(FIXTURE.read_bytes())]
    assert stt.is_loaded
    assert len(frames) == 1 and isinstance(frames[0], TranscriptionFrame)
    words = frames[0].text.split()
    assert all(word in words for word in FIXTURE_WORDS), frames[0].text
    assert frames[0].timestamp  # ISO 8601, from pipecat's clock helper


async def test_pocketsphinx_silence_yields_nothing() -> None:
    stt = PocketsphinxSTTService()
    silence = np.zeros(DECODER_SAMPLE_RATE, dtype="<i2")
    assert [frame async for frame in stt.run_stt(wav_bytes(silence, DECODER_SAMPLE_RATE))] == []


@pytest.mark.parametrize("sample_rate", [16000, 48000])
async def test_pocketsphinx_in_pipeline_transcribes_a_vad_segment(sample_rate: int) -> None:
    params = PipelineParams(audio_in_sample_rate=sample_rate)
    async with Harness([PocketsphinxSTTService()], params) as harness:
        await harness.send(*speech_frames(fixture_pcm(sample_rate), sample_rate))
        await harness.down.wait_for(TranscriptionFrame)
    transcripts = harness.down.of_type(TranscriptionFrame)
    assert len(transcripts) == 1 and transcripts[0].finalized
    assert all(word in transcripts[0].text.split() for word in FIXTURE_WORDS), transcripts
    assert harness.errors() == []


# --- LLM -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "reply"),
    [
        ("hello what time is it", "You said: hello what time is it."),
        ("  Is it raining?  ", "You said: Is it raining."),
        ("one\ntwo  three...", "You said: one two three."),
        ("", NO_INPUT_REPLY),
        (" ?! ", NO_INPUT_REPLY),
    ],
)
def test_scripted_reply(said: str, reply: str) -> None:
    assert scripted_reply(said) == reply


def test_last_user_text_only_counts_an_unanswered_user_message() -> None:
    context = LLMContext([{"role": "system", "content": "Be brief."}])
    assert last_user_text(context) == ""
    context.add_message({"role": "user", "content": "first"})
    context.add_message({"role": "assistant", "content": "You said: first."})
    assert last_user_text(context) == ""
    context.add_message({"role": "user", "content": [{"type": "text", "text": "second"}]})
    assert last_user_text(context) == "second"


async def test_scripted_llm_streams_a_response() -> None:
    context = LLMContext([{"role": "user", "content": "hello what time is it today"}])
    async with Harness([ScriptedLLMService(words_per_chunk=2)], PipelineParams()) as harness:
        await harness.send(LLMContextFrame(context))
        await harness.down.wait_for(LLMFullResponseEndFrame)
    frames = [
        f
        for f in harness.down.frames
        if isinstance(f, (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame))
    ]
    assert isinstance(frames[0], LLMFullResponseStartFrame)
    assert isinstance(frames[-1], LLMFullResponseEndFrame)
    texts = [f.text for f in frames[1:-1] if isinstance(f, LLMTextFrame)]
    assert len(texts) == len(frames) - 2 == 4  # 8 words, 2 per chunk
    assert "".join(texts) == "You said: hello what time is it today."
    assert harness.errors() == []


async def test_scripted_llm_survives_interruption() -> None:
    llm = ScriptedLLMService(words_per_chunk=1, chunk_delay=0.05)
    first = LLMContext([{"role": "user", "content": "one two three four five six seven eight"}])
    second = LLMContext([{"role": "user", "content": "again"}])
    async with Harness([llm], PipelineParams()) as harness:
        await harness.send(LLMContextFrame(first))
        await harness.down.wait_for(LLMTextFrame, count=2)
        await harness.send(InterruptionFrame(), LLMContextFrame(second))
        await harness.down.wait_for(LLMFullResponseEndFrame, count=2)
    texts = [f.text for f in harness.down.of_type(LLMTextFrame)]
    assert "".join(texts).endswith("You said: again.")
    assert len(texts) < 10 + 3  # the first reply (10 chunks) was cut short
    assert len(harness.down.of_type(LLMFullResponseStartFrame)) == 2
    assert harness.errors() == []


async def test_scripted_llm_run_inference() -> None:
    context = LLMContext([{"role": "user", "content": "summarise this"}])
    assert await ScriptedLLMService().run_inference(context) == "You said: summarise this."


# --- TTS -----------------------------------------------------------------------------------


async def test_read_wav_header_skips_extra_chunks() -> None:
    reader = asyncio.StreamReader()
    fmt = (16).to_bytes(4, "little") + bytes.fromhex("01000100") + (22050).to_bytes(4, "little")
    fmt += (44100).to_bytes(4, "little") + bytes.fromhex("02001000")
    reader.feed_data(b"RIFF\xff\xff\xff\x7fWAVE" + b"fmt " + fmt)
    reader.feed_data(b"LIST\x03\x00\x00\x00abc\x00" + b"data\xff\xff\xff\x7f" + b"\x01\x02")
    reader.feed_eof()
    wav_format = await read_wav_header(reader)
    assert (wav_format.sample_rate, wav_format.channels, wav_format.bits_per_sample) == (
        22050,
        1,
        16,
    )
    assert await reader.read() == b"\x01\x02"


@pytest.mark.parametrize("sample_rate", [16000, 24000, 48000])
async def test_espeak_tts_yields_audio_at_the_pipeline_rate(sample_rate: int) -> None:
    params = PipelineParams(audio_out_sample_rate=sample_rate)
    async with Harness([EspeakTTSService(chunk_ms=20)], params) as harness:
        await harness.send(TTSSpeakFrame("Hello, this is the offline voice."))
        await harness.down.wait_for(TTSStoppedFrame)
    audio = harness.down.of_type(TTSAudioRawFrame)
    assert audio and all(f.sample_rate == sample_rate and f.num_channels == 1 for f in audio)
    frame_bytes = sample_rate // 50 * 2
    assert all(len(f.audio) == frame_bytes for f in audio[:-1])
    assert 0 < len(audio[-1].audio) <= frame_bytes
    pcm = b"".join(f.audio for f in audio)
    assert 1.0 < len(pcm) / 2 / sample_rate < 4.0  # seconds of speech
    assert rms(pcm) > 500  # not silence
    kinds = [type(f) for f in harness.down.frames]
    assert kinds.index(TTSStartedFrame) < kinds.index(TTSAudioRawFrame)
    assert len(kinds) - 1 - kinds[::-1].index(TTSAudioRawFrame) < kinds.index(TTSStoppedFrame)
    assert harness.errors() == []
    assert espeak_children() == []


async def test_espeak_tts_reports_an_unknown_voice() -> None:
    async with Harness([EspeakTTSService(voice="nosuchvoice")], PipelineParams()) as harness:
        await harness.send(TTSSpeakFrame("Hello."))
        await harness.up.wait_for(ErrorFrame)
    assert "espeak-ng" in harness.up.of_type(ErrorFrame)[0].error
    assert harness.down.of_type(TTSAudioRawFrame) == []
    assert espeak_children() == []


async def test_espeak_tts_kills_espeak_on_interruption() -> None:
    # Long enough that espeak-ng is still synthesising when the interruption lands.
    text = " ".join(["This sentence keeps espeak busy for a good while."] * 150)
    async with Harness([EspeakTTSService()], PipelineParams()) as harness:
        await harness.send(TTSSpeakFrame(text))
        await harness.down.wait_for(TTSAudioRawFrame)
        assert espeak_children(), "espeak-ng finished before it could be interrupted"
        await harness.send(InterruptionFrame())
        for _ in range(250):  # polls /proc for up to 5 s
            if not espeak_children():
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail(f"espeak-ng still running after the interruption: {espeak_children()}")
    assert harness.errors() == []


def test_espeak_tts_needs_the_executable() -> None:
    with pytest.raises(FileNotFoundError, match="espeak-ng"):
        EspeakTTSService(executable="espeak-ng-not-installed")


# --- all three -----------------------------------------------------------------------------


async def test_offline_providers_hold_a_turn_in_a_real_pipeline() -> None:
    context = LLMContext([{"role": "system", "content": "You are a test bot."}])
    strategies = UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.2)],
    )
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(user_turn_strategies=strategies)
    )
    # Taps between the stages: the aggregators consume transcripts and the TTS the text.
    heard_tap, said_tap = FrameCollector(), FrameCollector()
    processors = [
        PocketsphinxSTTService(),
        heard_tap,
        aggregators.user(),
        ScriptedLLMService(),
        said_tap,
        EspeakTTSService(),
        aggregators.assistant(),
    ]
    params = PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=24000)
    async with Harness(processors, params) as harness:
        await harness.send(*speech_frames(fixture_pcm(), 16000))
        await harness.down.wait_for(TTSStoppedFrame, timeout=60)

    heard = heard_tap.of_type(TranscriptionFrame)[0].text
    assert all(word in heard.split() for word in FIXTURE_WORDS), heard
    said = "".join(f.text for f in said_tap.of_type(LLMTextFrame))
    assert said == scripted_reply(heard)
    audio = harness.down.of_type(TTSAudioRawFrame)
    assert audio and all(f.sample_rate == 24000 for f in audio)
    assert rms(b"".join(f.audio for f in audio)) > 500
    messages = [(m["role"], m["content"]) for m in context.get_messages() if isinstance(m, dict)]
    assert messages[1:] == [("user", heard), ("assistant", said)]
    assert harness.errors() == []
