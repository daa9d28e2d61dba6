"""Turn latency milestones, from frames pushed in a known order at known times."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    Frame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams

from bots.turn_metrics import TurnMetricsObserver, TurnReport

MS = 1_000_000  # pipeline clock is in nanoseconds
UP, DOWN = FrameDirection.UPSTREAM, FrameDirection.DOWNSTREAM


@dataclass
class _VAD:
    stop_silence_secs: float | None = None


#: A frame pushed at a time (ms) by a processor (``None``: one in the middle of the pipeline).
Push = tuple[int, Any, Frame, FrameDirection]


async def _feed_pushes(pushes: list[Push], vad_stop_secs: float = 0.2) -> list[TurnReport]:
    reports: list[TurnReport] = []

    async def keep(report: TurnReport) -> None:
        reports.append(report)

    # A VAD that does not measure its stops, whatever VAD an earlier test left in this process.
    observer = TurnMetricsObserver(keep, vad_stop_secs=vad_stop_secs, vad=_VAD())
    hop: Any = FrameProcessor()
    for at_ms, source, frame, direction in pushes:
        pushed = FramePushed(source or hop, hop, frame, direction, at_ms * MS)
        await observer.on_push_frame(pushed)
    return reports


async def _feed(frames: list[tuple[int, Frame]], vad_stop_secs: float = 0.2) -> list[TurnReport]:
    # The user aggregator sends VAD events upstream at once (and a queued copy downstream).
    vad = (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)
    return await _feed_pushes(
        [(at_ms, None, frame, UP if isinstance(frame, vad) else DOWN) for at_ms, frame in frames],
        vad_stop_secs,
    )


def _transcription(text: str) -> TranscriptionFrame:
    return TranscriptionFrame(text, "user", "2026-01-01T00:00:00Z")


def _audio() -> TTSAudioRawFrame:
    return TTSAudioRawFrame(b"\0\0" * 240, 24000, 1)


async def test_milestones_are_measured_from_the_vad_stop() -> None:
    reports = await _feed(
        [
            (0, VADUserStartedSpeakingFrame()),
            (10, UserStartedSpeakingFrame()),
            (1000, VADUserStoppedSpeakingFrame()),
            (1150, _transcription("hello")),
            (1300, UserStoppedSpeakingFrame()),
            (1400, LLMTextFrame("Hi")),
            (1550, _audio()),
            (1600, BotStartedSpeakingFrame()),
        ]
    )
    # (No measuring VAD here: the report has the configured wait only.)
    # The VAD stop on the host's clock: the last frame was pushed "just now", at 1600 ms on
    # the pipeline clock, so the stop at 1000 ms was 0.6 s ago.
    vad_stop_at = reports[0].pop("vad_stop_at")
    assert -0.001 <= time.monotonic() - 0.6 - vad_stop_at < 0.5  # rounded to 0.1 ms
    assert reports == [
        {
            "turn": 1,
            "vad_wait_ms": 200.0,
            "stt_ms": 150.0,
            "turn_end_ms": 300.0,
            "llm_first_ms": 400.0,
            "tts_first_ms": 550.0,
            "audio_out_ms": 600.0,
        }
    ]


async def test_barge_in_restarts_and_greeting_is_not_a_turn() -> None:
    reports = await _feed(
        [
            (0, _audio()),
            (5, BotStartedSpeakingFrame()),  # a greeting: no user turn before it
            (100, VADUserStartedSpeakingFrame()),
            (500, VADUserStoppedSpeakingFrame()),
            (600, _transcription("one")),
            (700, VADUserStartedSpeakingFrame()),  # the caller goes on talking
            (900, VADUserStoppedSpeakingFrame()),
            (950, _transcription("two")),
            (1000, UserStoppedSpeakingFrame()),
            (1100, LLMTextFrame("ok")),
            (1200, _audio()),
            (1300, BotStartedSpeakingFrame()),
        ]
    )
    assert [r["audio_out_ms"] for r in reports] == [400.0]


async def test_a_reply_the_transport_never_announced_is_measured_when_written() -> None:
    # pipecat's output can take a chunk of an interrupted reply off its queue just before the
    # interruption and send it just after: it then counts the bot as speaking, and the next
    # reply starts without a "bot started speaking".
    output: Any = BaseOutputTransport(TransportParams())
    reports = await _feed_pushes(
        [
            (0, None, VADUserStartedSpeakingFrame(), UP),
            (500, None, VADUserStoppedSpeakingFrame(), UP),
            (600, None, UserStoppedSpeakingFrame(), DOWN),
            (700, None, LLMTextFrame("one"), DOWN),
            (800, None, VADUserStartedSpeakingFrame(), UP),  # barge-in while it is synthesised
            (810, output, _audio(), DOWN),  # the stale chunk: the measurement started over
            (1500, None, VADUserStoppedSpeakingFrame(), UP),
            (1600, None, UserStoppedSpeakingFrame(), DOWN),
            (1700, None, LLMTextFrame("two"), DOWN),
            (1800, None, _audio(), DOWN),
            (1850, output, _audio(), DOWN),  # written; no BotStartedSpeakingFrame came
            (1900, output, _audio(), DOWN),
        ]
    )
    assert [(r["audio_out_ms"], r.get("bot_was_speaking")) for r in reports] == [(350.0, True)]


async def test_a_turn_started_by_a_late_transcription_keeps_the_vad_stop() -> None:
    reports = await _feed(
        [
            (0, VADUserStartedSpeakingFrame()),
            (500, VADUserStoppedSpeakingFrame()),
            (2000, UserStartedSpeakingFrame()),  # the turn opens when the text arrives
            (2000, _transcription("late")),
            (2100, UserStoppedSpeakingFrame()),
            (2200, LLMTextFrame("ok")),
            (2300, _audio()),
            (2400, BotStartedSpeakingFrame()),
        ]
    )
    assert reports[0]["audio_out_ms"] == 1900.0
    assert reports[0]["stt_ms"] == 1500.0


async def test_a_late_downstream_copy_of_a_vad_event_is_not_the_reference() -> None:
    reports = await _feed_pushes(
        [
            (0, None, VADUserStartedSpeakingFrame(), UP),
            (1000, None, VADUserStoppedSpeakingFrame(), UP),
            (1100, None, _transcription("hello"), DOWN),
            (1900, None, VADUserStartedSpeakingFrame(), DOWN),  # the aggregator's queue was behind
            (2000, None, VADUserStoppedSpeakingFrame(), DOWN),
            (2100, None, UserStoppedSpeakingFrame(), DOWN),
            (2200, None, LLMTextFrame("ok"), DOWN),
            (2300, None, _audio(), DOWN),
            (2400, None, BotStartedSpeakingFrame(), DOWN),
        ]
    )
    assert reports[0]["stt_ms"] == 100.0
    assert reports[0]["audio_out_ms"] == 1400.0


async def test_the_vad_s_own_measure_of_the_stop_is_read_at_the_stop_that_counts() -> None:
    reports: list[TurnReport] = []

    async def keep(report: TurnReport) -> None:
        reports.append(report)

    vad = _VAD()
    observer = TurnMetricsObserver(keep, vad_stop_secs=0.2, vad=vad)
    hop: Any = FrameProcessor()
    up, down = FrameDirection.UPSTREAM, FrameDirection.DOWNSTREAM
    for at_ms, frame, direction, measured in [
        (0, VADUserStartedSpeakingFrame(), up, None),
        (500, VADUserStoppedSpeakingFrame(), up, 0.2312),
        (700, VADUserStartedSpeakingFrame(), up, None),  # the caller goes on talking
        (900, VADUserStoppedSpeakingFrame(), up, 0.2496),
        (1000, UserStoppedSpeakingFrame(), down, None),
        (1100, LLMTextFrame("ok"), down, None),
        (1200, _audio(), down, None),
        (1300, BotStartedSpeakingFrame(), down, None),
    ]:
        if measured is not None:
            vad.stop_silence_secs = measured
        await observer.on_push_frame(FramePushed(hop, hop, frame, direction, at_ms * MS))
    assert reports[0]["vad_silence_ms"] == 249.6
    assert reports[0]["audio_out_ms"] == 400.0
