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

``_run_analyzer`` is the analyzer's own per-buffer step, ``_vad_buffer`` the audio it holds
short of a window, ``_vad_frames`` a window's samples and ``_vad_stop_frames`` the silent
windows a stop takes (pipecat is pinned in pyproject.toml).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState

from media.audio import loud_limit

__all__ = ["InlineSileroVAD"]


class InlineSileroVAD(SileroVADAnalyzer):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._limit = loud_limit()
        self._heard = 0  #: samples analysed since the start
        self._last_loud: int | None = None  #: just after the last loud sample
        #: Seconds of audio after the last loud sample taken in before the last stop.
        self.stop_silence_secs: float | None = None

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
