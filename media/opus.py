"""One mono Opus encoder for what voicebots itself sends: the bot's voice and the caller's WAV.

libopus at one of Opus's native rates (8, 12, 16, 24 or 48 kHz: nothing to resample), mono,
20 ms a packet, tuned for speech (``voip``). aiortc's own encoder resamples everything to
48 kHz stereo and sends 96 kbit/s.

Silence costs libopus more than speech (~250 µs a frame against ~115 µs here: its filter
states decay towards zero), and a bot is silent most of a call. After
:data:`SILENCE_SETTLE_FRAMES` frames of digital silence the encoder's output no longer changes:
from then on the same packet is sent again, unencoded (~4 µs), until a frame is not silent.
The decoder gets exactly the packets the encoder would have made. The encoder then resumes
from its settled state; only its rate control remembers fewer frames, so what it sends next
differs in bits from an encoder that was never spared, not in sound (the decoded difference is
~43 dB under the speech, ``tests/test_media_voice_track.py``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from av import AudioFrame, CodecContext
from av.packet import Packet

from media.audio import Samples

__all__ = ["SILENCE_SETTLE_FRAMES", "MonoOpusEncoder"]

#: Frames of digital silence the encoder takes to settle: its packets change for ~15 frames
#: after speech (the same packet can come twice in a row before it has settled), then repeat.
SILENCE_SETTLE_FRAMES = 25


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
        self._silent_frames = 0  #: consecutive all-zero frames encoded
        self._last_silent: bytes | None = None  #: the packet of the last of them
        self._settled: bytes | None = None  #: the packet silence now encodes to, once settled
        self._delay = 0  #: how far the encoder's packets lag its frames (its lookahead)

    def encode(self, samples: Samples, pts: int) -> list[Packet]:
        """The packets for one 20 ms frame of ``samples`` starting at sample ``pts`` (one,
        once the encoder is running)."""
        resumed = False
        if samples.any():
            resumed = self._settled is not None
            self._silent_frames, self._last_silent, self._settled = 0, None, None
        elif self._settled is not None:
            return [self._packet(self._settled, pts - self._delay)]
        else:
            self._silent_frames += 1
        packets = self._encode(samples, pts)
        if resumed and packets:
            # FFmpeg dates a packet by the samples it has queued, which skipped the frames
            # sent settled: the first packet after them would carry the last encoded date.
            packets[0].pts = pts - self._delay
        if self._silent_frames >= SILENCE_SETTLE_FRAMES and len(packets) == 1:
            data = bytes(packets[0])
            if data == self._last_silent:
                self._settled = data
                self._delay = pts - (packets[0].pts or 0)
            self._last_silent = data
        return packets

    @property
    def settled(self) -> bool:
        """Whether silence is being sent without encoding."""
        return self._settled is not None

    def _packet(self, data: bytes, pts: int) -> Packet:
        packet = Packet(data)
        packet.pts = pts
        packet.time_base = Fraction(1, self.sample_rate)
        return packet

    def _encode(self, samples: Samples, pts: int) -> list[Packet]:
        frame = AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = pts
        frame.time_base = Fraction(1, self.sample_rate)
        return list(self._codec.encode(frame))
