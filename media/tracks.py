"""aiortc media tracks of the headless caller: a WAV as the microphone, frames as samples."""

from __future__ import annotations

import asyncio
import hashlib
import time
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from av.packet import Packet

from media.audio import Samples
from media.opus import MonoOpusEncoder

__all__ = ["FRAME_SAMPLES", "SAMPLE_RATE", "WavTrack", "frame_to_mono", "opus_packets"]

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, what browsers and aiortc packetize Opus at
#: Mono speech: aiortc's own encoder sends 96 kbit/s of stereo.
BIT_RATE = 64000
#: Silent frames encoded after the audio, for the encoder's own fade to silence.
TAIL_FRAMES = 3
#: Encoded WAVs kept, by content: a load test's callers all say the same few things.
_CACHE_SIZE = 4
_encoded: dict[bytes, tuple[tuple[bytes, ...], bytes]] = {}


def opus_packets(audio: Samples) -> tuple[tuple[bytes, ...], bytes]:
    """``audio`` (mono int16 at 48 kHz) as 20 ms Opus packets, and the packet of the silence
    after it; the last frame is padded with silence. Encoded once per distinct audio."""
    key = hashlib.blake2b(audio.tobytes(), digest_size=16).digest()
    if key in _encoded:
        return _encoded[key]
    frames = -(-audio.size // FRAME_SAMPLES) + TAIL_FRAMES + 1
    padded = np.zeros(frames * FRAME_SAMPLES, np.int16)
    padded[: audio.size] = audio
    encoder = MonoOpusEncoder(SAMPLE_RATE, BIT_RATE)
    packets: list[bytes] = []
    for start in range(0, padded.size, FRAME_SAMPLES):
        frame = padded[start : start + FRAME_SAMPLES]
        packets += [bytes(packet) for packet in encoder.encode(frame, start)]
    encoded = tuple(packets[:-1]), packets[-1]
    if len(_encoded) >= _CACHE_SIZE:
        _encoded.pop(next(iter(_encoded)))
    _encoded[key] = encoded
    return encoded


class WavTrack(MediaStreamTrack):
    """The caller's microphone: samples in real time as 20 ms frames, then silence forever.

    The WAV starts playing at the first ``recv`` (which aiortc makes once DTLS is up), on the
    monotonic clock. As from a microphone, a frame is handed over when its last sample has been
    played, not when its first has: a sample reaches the encoder up to 20 ms after it sounded.
    (aiortc's ``AudioStreamTrack`` hands each frame over at its start, which would send every
    sample up to 20 ms before it is "spoken" and flatter the latency measured from it.)

    The frames are Opus packets, encoded before the call (:func:`opus_packets`): aiortc only
    packetizes them, so a load test's callers cost the machine the sending, not an encoder
    and a thread hop per frame each.
    """

    kind = "audio"

    def __init__(self, samples: Samples, lead_silence: float = 0.0) -> None:
        super().__init__()
        self._lead = round(lead_silence * SAMPLE_RATE)
        self._samples = self._lead + samples.size
        self._packets, self._silence = opus_packets(
            np.concatenate([np.zeros(self._lead, np.int16), samples])
        )
        self._pts = 0
        self._start: float | None = None

    def at(self, offset_s: float) -> float | None:
        """The instant the WAV sample at ``offset_s`` was played; ``None`` before playback."""
        if self._start is None:
            return None
        return self._start + self._lead / SAMPLE_RATE + offset_s

    @property
    def done(self) -> bool:
        """Whether the whole WAV has been sent."""
        return self._start is not None and self._pts + FRAME_SAMPLES >= self._samples

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
        wait = self._start + (self._pts + FRAME_SAMPLES) / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        index = self._pts // FRAME_SAMPLES
        packet = Packet(self._packets[index] if index < len(self._packets) else self._silence)
        packet.pts = self._pts
        packet.time_base = Fraction(1, SAMPLE_RATE)
        return packet


def frame_to_mono(frame: AudioFrame) -> Samples:
    """A decoded frame as mono int16 (channels averaged); the rate is left as it is."""
    array = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = array.mean(axis=0) if channels > 1 else array[0]
    else:
        flat = array.reshape(-1)
        mono = flat.reshape(-1, channels).mean(axis=1) if channels > 1 else flat
    if np.issubdtype(mono.dtype, np.floating) and frame.format.name.startswith(("flt", "dbl")):
        mono = mono * 32767.0
    if mono.dtype == np.int16:
        return mono
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)
