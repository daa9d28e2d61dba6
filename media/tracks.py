"""aiortc media tracks of the headless caller: a WAV as the microphone, frames as samples."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from media.audio import Samples

__all__ = ["FRAME_SAMPLES", "SAMPLE_RATE", "WavTrack", "frame_to_mono"]

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, what browsers and aiortc packetize Opus at


class WavTrack(MediaStreamTrack):
    """The caller's microphone: samples in real time as 20 ms frames, then silence forever.

    Paced on the monotonic clock from the first ``recv`` (which aiortc makes once DTLS is up),
    like aiortc's ``AudioStreamTrack`` but immune to wall-clock steps.
    """

    kind = "audio"

    def __init__(self, samples: Samples, lead_silence: float = 0.0) -> None:
        super().__init__()
        self._lead = round(lead_silence * SAMPLE_RATE)
        self._audio = np.concatenate([np.zeros(self._lead, np.int16), samples])
        self._silence = np.zeros(FRAME_SAMPLES, np.int16)
        self._pts = 0
        self._start: float | None = None

    def at(self, offset_s: float) -> float | None:
        """The instant the WAV sample at ``offset_s`` went out; ``None`` before playback."""
        if self._start is None:
            return None
        return self._start + self._lead / SAMPLE_RATE + offset_s

    @property
    def done(self) -> bool:
        """Whether the whole WAV has been sent."""
        return self._start is not None and self._pts + FRAME_SAMPLES >= self._audio.size

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        chunk = self._audio[self._pts : self._pts + FRAME_SAMPLES]
        if chunk.size < FRAME_SAMPLES:
            chunk = np.concatenate([chunk, self._silence[: FRAME_SAMPLES - chunk.size]])
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = Fraction(1, SAMPLE_RATE)
        return frame


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
