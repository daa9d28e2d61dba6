"""One mono Opus encoder for what voicebots itself sends: the bot's voice and the caller's WAV.

libopus at one of Opus's native rates (8, 12, 16, 24 or 48 kHz: nothing to resample), mono,
20 ms a packet, tuned for speech (``voip``). aiortc's own encoder resamples everything to
48 kHz stereo and sends 96 kbit/s.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from av import AudioFrame, CodecContext
from av.packet import Packet

from media.audio import Samples

__all__ = ["MonoOpusEncoder"]


class MonoOpusEncoder:
    def __init__(self, sample_rate: int, bit_rate: int) -> None:
        self.sample_rate = sample_rate
        self._codec = CodecContext.create("libopus", "w")
        self._codec.bit_rate = bit_rate
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = sample_rate
        self._codec.time_base = Fraction(1, sample_rate)
        self._codec.options = {"application": "voip"}

    def encode(self, samples: Samples, pts: int) -> list[Packet]:
        """The packets for one 20 ms frame of ``samples`` starting at sample ``pts`` (one,
        once the encoder is running)."""
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = pts
        frame.time_base = Fraction(1, self.sample_rate)
        return list(self._codec.encode(frame))
