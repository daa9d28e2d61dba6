"""The bot's voice activity detector: pipecat's Silero analyzer, run on the event loop.

pipecat's analyzer hands every 20 ms audio frame to a worker thread, though only one frame in
~1.6 carries a whole 32 ms window to score, and a scoring takes ~0.2 ms of onnxruntime: the
hop (submit, wake the worker, hand the result back to the loop) costs more than the work, 50
times a second. Here the frame is analysed where it arrives; no thread is ever started.

``_run_analyzer`` is the analyzer's own per-buffer step (pipecat is pinned in pyproject.toml).
"""

from __future__ import annotations

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState

__all__ = ["InlineSileroVAD"]


class InlineSileroVAD(SileroVADAnalyzer):
    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)
