"""The bot's voice activity detector: pipecat's Silero analyzer, measuring each stop it declares.

The analysis is pipecat's own, unchanged, but run on the event loop where each frame arrives:
pipecat's analyzer hands every 20 ms frame to a worker thread and back, a hand-over that costs
more CPU than the analysis (:func:`bots.pipecat_adapter.analyze_in_place`; no thread is ever
started). Around it, :class:`MeasuringSileroVAD` measures how much audio after the user's last
loud sample the analyzer took in before it declared a stop (``stop_silence_secs``). That is
the VAD's own stop time: the configured ``stop_secs``, rounded to Silero's analysis windows,
plus the windows the model still scores as speech after the voice has ended (the
``bots.turn_metrics`` report carries it, and the bench subtracts it as a wait rather than
counting it as overhead). It is ``None`` when a sound fell inside the windows counted as
silence, as when the next word starts before the model hears it.

What it reads of the analyzer to measure is public: its window (``num_frames_required``), its
sample rate and its parameters. The analyzer takes in whole windows of the audio it is given,
so the end of the last window analysed is the audio heard so far, rounded down to a window.

Its model's session is built from Silero's graph as onnxruntime optimizes it, which the zygote
computes once (:func:`optimized_graph`, from ``bots.preload``): a bot then builds its session
without optimizing the graph again, for the same scores, on the call's way to its first word
(pipecat's analyzer takes no session of ours: :func:`bots.pipecat_adapter.init_silero_analyzer`
reaches it). Only the graph's bytes cross the fork; each bot's session is its own.
"""

from __future__ import annotations

import functools
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState

from bots import pipecat_adapter
from media.audio import loud_limit

__all__ = ["MeasuringSileroVAD", "measuring", "optimized_graph"]

#: pipecat's copy of the Silero VAD model (ONNX, in its wheel).
MODEL = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")


def _session_options(level: onnxruntime.GraphOptimizationLevel) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1  # as pipecat's
    options.intra_op_num_threads = 1
    options.graph_optimization_level = level
    return options


@functools.cache
def optimized_graph() -> bytes:
    """Silero's graph with onnxruntime's portable optimizations applied, serialized; made once
    per process (in the zygote, before any fork)."""
    with tempfile.TemporaryDirectory(prefix="voicebots-vad-") as scratch:
        target = Path(scratch) / "silero_vad.optimized.onnx"
        options = _session_options(onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        options.optimized_model_filepath = str(target)
        with resources.as_file(MODEL) as source:
            session = onnxruntime.InferenceSession(
                str(source), sess_options=options, providers=["CPUExecutionProvider"]
            )
        del session
        return target.read_bytes()


def _session() -> onnxruntime.InferenceSession:
    """A session on :func:`optimized_graph`, which onnxruntime need not optimize again."""
    return onnxruntime.InferenceSession(
        optimized_graph(),
        sess_options=_session_options(onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL),
        providers=["CPUExecutionProvider"],
    )


#: The last MeasuringSileroVAD made in this process: a bot serves one call, whose VAD it is.
_measuring: MeasuringSileroVAD | None = None


def measuring() -> MeasuringSileroVAD | None:
    """The VAD of this process's call, if it measures its stops (see the module doc)."""
    return _measuring


class MeasuringSileroVAD(SileroVADAnalyzer):
    """pipecat's Silero VAD, which also measures the silence each of its stops took."""

    def __init__(self, **kwargs: Any) -> None:
        pipecat_adapter.init_silero_analyzer(self, _session(), **kwargs)
        self._limit = loud_limit()
        self._last_state = VADState.QUIET  #: what the last analysis returned
        self._heard = 0  #: samples given to the analyzer since the start
        self._last_loud: int | None = None  #: just after the last loud sample
        #: Seconds of audio after the last loud sample taken in before the last stop.
        self.stop_silence_secs: float | None = None
        global _measuring
        _measuring = self

    async def analyze_audio(self, buffer: bytes) -> VADState:
        before, state = self._last_state, pipecat_adapter.analyze_in_place(self, buffer)
        self._last_state = state
        samples = np.frombuffer(buffer, np.int16)
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > self._limit)
        if loud.size:
            self._last_loud = self._heard + int(loud[-1]) + 1
        self._heard += samples.size
        if state is VADState.QUIET and before in (VADState.SPEAKING, VADState.STOPPING):
            self.stop_silence_secs = self._measure_stop()
        return state

    def _measure_stop(self) -> float | None:
        """The audio taken in after the last loud sample, or ``None`` if there was sound in
        the windows counted as silence (a word began again before the model heard it)."""
        window = self.num_frames_required()
        decided_at = self._heard - self._heard % window  # the end of the last window
        stop_windows = round(self.params.stop_secs * self.sample_rate / window)
        counted_from = decided_at - stop_windows * window
        if self._last_loud is None or self._last_loud > counted_from:
            return None
        return (decided_at - self._last_loud) / self.sample_rate
