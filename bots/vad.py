"""The bot's voice activity detector: pipecat's Silero analyzer, run on the event loop.

pipecat's analyzer hands every 20 ms audio frame to a worker thread, though only one frame in
~1.6 carries a whole 32 ms window to score, and a scoring takes ~0.2 ms of onnxruntime: the
hop (submit, wake the worker, hand the result back to the loop) costs more than the work, 50
times a second. Here the frame is analysed where it arrives; no thread is ever started.

It also measures each stop it declares: how much audio after the user's last loud sample it
took in before deciding (``stop_silence_secs``). That is the VAD's own stop time: the
configured ``stop_secs``, rounded to Silero's 32 ms windows, plus the windows the model still
scores as speech after the voice has ended (the ``bots.turn_metrics`` report carries it). It is
``None`` when a sound fell inside the windows counted as silence, as when the next word starts
before the model hears it.

Its model's session is built from Silero's graph as onnxruntime optimizes it, which the zygote
computes once (:func:`optimized_graph`, from ``bots.preload``): a bot then builds its own session
without optimizing again, in ~15 ms of CPU instead of ~50 ms (a bot's warm-up took 80-120 ms,
now ~60-70 ms), for the same scores at the same speed. Only the graph's bytes cross the
fork; the session that produced them is gone before the zygote forks, and each bot's session
is its own.

``_run_analyzer`` is the analyzer's own per-buffer step, ``_vad_buffer`` the audio it holds
short of a window, ``_vad_frames`` a window's samples and ``_vad_stop_frames`` the silent
windows a stop takes; ``SileroOnnxModel``'s ``session`` is its onnxruntime session and
``SileroVADAnalyzer.__init__`` loads the model and resets its reset counters, which
:class:`InlineSileroVAD` does itself (pipecat is pinned in pyproject.toml).
"""

from __future__ import annotations

import functools
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADState

from media.audio import loud_limit

__all__ = ["InlineSileroVAD", "measuring", "optimized_graph"]

#: pipecat's copy of the Silero VAD model (ONNX, in its wheel).
MODEL = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")


def _session_options(level: onnxruntime.GraphOptimizationLevel) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1  # as pipecat's: the loop's own thread runs the model
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


class _SileroModel(SileroOnnxModel):
    """pipecat's Silero model, on a session built from :func:`optimized_graph`."""

    def __init__(self) -> None:  # pipecat's own builds the session from the file
        self.session = onnxruntime.InferenceSession(
            optimized_graph(),
            sess_options=_session_options(onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL),
            providers=["CPUExecutionProvider"],
        )
        self.reset_states()
        self.sample_rates = [8000, 16000]


#: The last InlineSileroVAD made in this process: a bot serves one call, whose VAD it is.
_measuring: InlineSileroVAD | None = None


def measuring() -> InlineSileroVAD | None:
    """The VAD of this process's call, if it measures its stops (see the module doc)."""
    return _measuring


class InlineSileroVAD(SileroVADAnalyzer):
    def __init__(self, **kwargs: Any) -> None:
        # SileroVADAnalyzer.__init__ less its model load, which _SileroModel does faster.
        VADAnalyzer.__init__(self, **kwargs)
        self._model = _SileroModel()
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._limit = loud_limit()
        self._heard = 0  #: samples analysed since the start
        self._last_loud: int | None = None  #: just after the last loud sample
        #: Seconds of audio after the last loud sample taken in before the last stop.
        self.stop_silence_secs: float | None = None
        global _measuring
        _measuring = self

    async def analyze_audio(self, buffer: bytes) -> VADState:
        before = self._vad_state
        state = self._run_analyzer(buffer)
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
        decided_at = self._heard - len(self._vad_buffer) // 2  # the end of the last window
        counted_from = decided_at - self._vad_stop_frames * self._vad_frames
        if self._last_loud is None or self._last_loud > counted_from:
            return None
        return (decided_at - self._last_loud) / self.sample_rate
