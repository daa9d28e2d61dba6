"""The bot's VAD: pipecat's analysis unchanged but on the event loop, each stop measured, and
its model built from the graph optimized once."""

from __future__ import annotations

import threading

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from bots.vad import MeasuringSileroVAD, measuring, optimized_graph
from media.audio import read_wav, speech_end
from tests import FIXTURES


def _frames() -> list[bytes]:
    """The speech fixture in 20 ms frames at 16 kHz, then a second of quiet."""
    speech = read_wav(FIXTURES / "hello.wav", 16_000).astype("<i2")
    audio = np.concatenate([speech, np.zeros(16_000, dtype="<i2")]).tobytes()
    return [audio[i : i + 640] for i in range(0, len(audio) - 639, 640)]


async def _states(analyzer: SileroVADAnalyzer, frames: list[bytes]) -> list[VADState]:
    analyzer.set_sample_rate(16_000)
    return [await analyzer.analyze_audio(frame) for frame in frames]


async def test_the_analysis_is_pipecats_on_the_loop() -> None:
    frames = _frames()
    params = VADParams(stop_secs=0.2)
    vad = MeasuringSileroVAD(params=params)
    assert measuring() is vad  # the process's one call's VAD, for the turn reports
    threads = threading.active_count()
    ours = await _states(vad, frames)
    assert threading.active_count() == threads  # no worker thread was started
    assert VADState.SPEAKING in ours and ours[-1] == VADState.QUIET
    assert ours == await _states(SileroVADAnalyzer(params=params), frames)


async def test_each_stop_measures_the_audio_the_vad_took_in_after_the_last_loud_sample() -> None:
    speech = read_wav(FIXTURES / "hello.wav", 16_000)[: int(2.5 * 16_000)]  # the noise cut off
    audio = np.concatenate([speech, np.zeros(16_000, np.int16)]).astype("<i2").tobytes()
    frames = [audio[i : i + 640] for i in range(0, len(audio) - 639, 640)]
    vad = MeasuringSileroVAD(params=VADParams(stop_secs=0.2))
    vad.set_sample_rate(16_000)
    stops: list[tuple[int, float | None]] = []  # (frames heard, the measure) at each stop
    state = VADState.QUIET
    for index, frame in enumerate(frames):
        before, state = state, await vad.analyze_audio(frame)
        if state is VADState.QUIET and before is not VADState.QUIET:
            stops.append((index + 1, vad.stop_silence_secs))

    # The first stop is in the pause before "world"; the word had begun when the model heard
    # the pause's sixth silent window, so there is no clean measure of that one.
    (_, first), (heard, measured) = stops
    assert first is None
    assert measured is not None
    heard_audio = np.frombuffer(b"".join(frames[:heard]), "<i2")
    last_loud = speech_end(heard_audio, 16_000)
    assert last_loud is not None
    decided = heard_audio.size / 16_000  # the stop came within the last 32 ms window of this
    assert decided - 0.032 <= last_loud + measured <= decided
    # Six silent 32 ms windows for the configured 0.2 s, and the ones the model still heard.
    assert 0.192 <= measured < 0.2 + 3 * 0.032


def test_the_model_on_the_optimized_graph_scores_as_pipecats() -> None:
    ours, theirs = MeasuringSileroVAD(), SileroVADAnalyzer()
    assert optimized_graph() is optimized_graph()  # made once per process
    speech = read_wav(FIXTURES / "hello.wav", 16_000).astype(np.float32) / 32768.0
    windows = [speech[i : i + 512] for i in range(0, speech.size - 511, 512)]
    a = np.array([float(np.ravel(ours._model(w, 16_000))[0]) for w in windows])
    b = np.array([float(np.ravel(theirs._model(w, 16_000))[0]) for w in windows])
    assert a.max() > 0.9 and a.min() < 0.1  # speech and pauses, as scored
    np.testing.assert_allclose(a, b, atol=1e-4)
