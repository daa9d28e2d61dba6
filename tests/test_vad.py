"""The bot's VAD runs on the event loop, with pipecat's analysis unchanged."""

from __future__ import annotations

import threading

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from bots.vad import InlineSileroVAD
from media.audio import read_wav
from tests.system import FIXTURES


def _frames() -> list[bytes]:
    """The speech fixture in 20 ms frames at 16 kHz, then a second of quiet."""
    speech = read_wav(FIXTURES / "hello.wav", 16_000).astype("<i2")
    audio = np.concatenate([speech, np.zeros(16_000, dtype="<i2")]).tobytes()
    return [audio[i : i + 640] for i in range(0, len(audio) - 639, 640)]


async def _states(analyzer: SileroVADAnalyzer, frames: list[bytes]) -> list[VADState]:
    analyzer.set_sample_rate(16_000)
    return [await analyzer.analyze_audio(frame) for frame in frames]


async def test_inline_analysis_matches_pipecat_and_starts_no_thread() -> None:
    frames = _frames()
    params = VADParams(stop_secs=0.2)
    before = threading.active_count()
    inline = await _states(InlineSileroVAD(params=params), frames)
    assert threading.active_count() == before
    assert VADState.SPEAKING in inline and inline[-1] == VADState.QUIET
    assert inline == await _states(SileroVADAnalyzer(params=params), frames)
