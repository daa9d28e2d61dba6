"""An interruption that overtakes queued reply audio in the output transport stops it for good."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import WorkerRunner
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

from media.voice_transport import StaleAudioGuard, VoiceOutputTransport, VoiceTransport

RATE = 24000
#: The first reply's samples, and the second's: what was written tells them apart.
FIRST, SECOND = 1000, 2000


class _Recorder(BaseOutputTransport):
    """An output transport that writes into a list of events, in the order they happen."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(TransportParams(audio_out_enabled=True, audio_out_sample_rate=RATE))
        self.events = events

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        value = int(np.frombuffer(frame.audio, np.int16)[0])
        self.events.append({FIRST: "first", SECOND: "second"}.get(value, "silence"))
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self.events.append("interruption")
        await super().process_frame(frame, direction)


class _GuardedRecorder(StaleAudioGuard, _Recorder):
    pass


class _SpeakingEvents(FrameProcessor):
    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self.events.append("started speaking")
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.events.append("stopped speaking")
        await self.push_frame(frame, direction)


def _audio(value: int, frames: int) -> list[TTSAudioRawFrame]:
    chunk = np.full(RATE // 50, value, np.int16).tobytes()  # 20 ms
    return [TTSAudioRawFrame(chunk, RATE, 1) for _ in range(frames)]


async def _play(output: _Recorder, scenario: Callable[[_Recorder], Awaitable[None]]) -> list[str]:
    """Runs ``scenario`` against ``output`` in a pipeline; what it wrote and said, in order."""
    worker = PipelineWorker(
        Pipeline([output, _SpeakingEvents(output.events)]),
        params=PipelineParams(audio_out_sample_rate=RATE),
        cancel_on_idle_timeout=False,
    )
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())
    try:
        await asyncio.sleep(0.3)  # started
        await scenario(output)
        await asyncio.sleep(0.5)
    finally:
        await worker.cancel()
        await asyncio.wait_for(running, 10)
    return [event for event in output.events if event != "silence"]


async def _barge_in(guarded: bool) -> list[str]:
    """A reply whose audio is still queued at the output when the caller interrupts it, then
    the next reply."""

    async def scenario(output: _Recorder) -> None:
        # Pushed as the TTS pushes them, with no await that lets the output run in between:
        # all of the first reply waits in the output's queue when the interruption arrives.
        for frame in [*_audio(FIRST, 5), InterruptionFrame()]:
            await output.queue_frame(frame)
        await asyncio.sleep(0.5)
        for frame in _audio(SECOND, 5):
            await output.queue_frame(frame)

    return await _play((_GuardedRecorder if guarded else _Recorder)([]), scenario)


async def test_audio_overtaken_by_an_interruption_is_not_played() -> None:
    events = await _barge_in(guarded=True)
    assert "first" not in events, events
    after = events[events.index("interruption") :]
    # The next reply is heard, and it starts the bot speaking: its turn can be measured.
    assert "second" in after, events
    assert after.index("started speaking") < after.index("second"), events


async def test_without_the_guard_the_interrupted_reply_is_played_after_the_interruption() -> None:
    # What the guard is for: pipecat's output handles the interruption (a system frame) ahead
    # of the audio queued before it, then plays that audio and counts the bot as speaking, so
    # the next reply never says it started.
    events = await _barge_in(guarded=False)
    after = events[events.index("interruption") :]
    assert "first" in after, events
    assert after.count("started speaking") == 1, events
    assert after.index("started speaking") < after.index("first"), events


async def test_a_chunk_taken_to_send_before_the_interruption_is_not_sent() -> None:
    # The sender took it off its queue just before the interruption emptied the queue, and
    # goes on to send it just after: taking it starts the bot speaking again.
    (taken,) = _audio(FIRST, 1)

    async def scenario(output: _Recorder) -> None:
        await output.queue_frame(InterruptionFrame())
        await asyncio.sleep(0.1)
        sender = output._media_senders[None]
        await sender._handle_frame(taken)  # what the sender does with it, then the write
        assert not await output.write_audio_frame(taken)
        await asyncio.sleep(0.1)
        for frame in _audio(SECOND, 5):
            await output.queue_frame(frame)

    output = _GuardedRecorder([])
    events = await _play(output, scenario)
    assert "first" not in events, events
    assert events[:4] == [
        "interruption",
        "started speaking",  # (taking the chunk)
        "stopped speaking",  # at once, not after the 3 s pipecat waits for more audio
        "started speaking",  # the next reply is announced
    ], events
    assert set(events[4:]) == {"second"}, events
    assert output.stale_frames == 1


def test_the_transport_builds_the_guarded_output() -> None:
    connection = SmallWebRTCConnection()
    transport = VoiceTransport(webrtc_connection=connection, params=TransportParams())
    output = transport.output()
    assert isinstance(output, VoiceOutputTransport)
    assert transport.output() is output
