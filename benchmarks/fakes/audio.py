"""Audio for the fake OpenAI server: WAV parsing, and speech-like PCM for ``/audio/speech``.

Speech is espeak-ng's output resampled to 24 kHz when espeak-ng is installed (real phonemes, so
VAD and STT downstream behave as with a real voice), else a voiced 220 Hz tone with one
envelope per word. Either way the length grows with the text and the signal is never silent.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import struct
import wave
from dataclasses import dataclass
from typing import Literal

import numpy as np
import soxr

__all__ = [
    "SPEECH_SAMPLE_RATE",
    "SpeechEngine",
    "WavAudio",
    "espeak_available",
    "parse_wav",
    "synthesize",
    "tone_speech",
    "wav_bytes",
]

#: OpenAI's ``pcm`` speech format: 24 kHz, mono, signed 16-bit little-endian.
SPEECH_SAMPLE_RATE = 24_000
#: espeak-ng's default speaking rate, in words per minute.
ESPEAK_WPM = 175

SpeechEngine = Literal["auto", "espeak", "tone"]


@dataclass(frozen=True)
class WavAudio:
    pcm: bytes  # signed 16-bit little-endian, interleaved
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate)


def parse_wav(data: bytes) -> WavAudio:
    """Parse a 16-bit PCM WAV file.

    Chunk sizes larger than the data are clipped rather than rejected: streaming writers such
    as ``espeak-ng --stdout`` cannot know the length and put a placeholder there.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise ValueError("WAV fmt chunk is too short")
            audio_format, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            fmt = (audio_format, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk comes before its fmt chunk")
            audio_format, channels, rate, bits = fmt
            # 0xFFFE is WAVE_FORMAT_EXTENSIBLE, which carries plain PCM for 16-bit audio.
            if audio_format not in (1, 0xFFFE) or bits != 16 or channels < 1 or rate < 1:
                raise ValueError(
                    f"only 16-bit PCM WAV is supported (format {audio_format}, {bits} bits)"
                )
            frame = 2 * channels
            return WavAudio(body[: len(body) // frame * frame], rate, channels)
        # Chunks are padded to an even length.
        pos += 8 + size + (size & 1)
    raise ValueError("WAV file has no data chunk")


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """Wrap 16-bit PCM in a WAV container."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


#: Rise and fall of each burst of :func:`tone_speech` (no click, no quiet onset).
TONE_EDGE_S = 0.005


def tone_speech(text: str, *, speed: float = 1.0, sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """A voiced 220 Hz tone, one burst per word (60 ms per letter), 24 kHz PCM.

    Each burst rises and falls in ``TONE_EDGE_S``: the reply's first 20 ms packet is already
    loud, so a listener finds where the audio starts to the packet (a burst shaped as one
    raised cosine stays under -50 dBFS for its first ~13 ms).
    """
    words = text.split() or [text]
    edge = int(TONE_EDGE_S * sample_rate)
    gap = np.zeros(int(0.08 / speed * sample_rate), dtype=np.float64)
    pieces: list[np.ndarray] = []
    for word in words:
        n = max(int(max(len(word), 2) * 0.06 / speed * sample_rate), 1)
        t = np.arange(n) / sample_rate
        # A fundamental with two weaker harmonics reads as "voiced" to energy-based VADs.
        voice = (
            np.sin(2 * np.pi * 220 * t)
            + 0.5 * np.sin(2 * np.pi * 440 * t)
            + 0.25 * np.sin(2 * np.pi * 660 * t)
        )
        envelope = np.ones(n)
        ramp = min(edge, n // 2)
        if ramp:
            rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
            envelope[:ramp], envelope[n - ramp :] = rise, rise[::-1]
        pieces.extend((voice * envelope, gap))
    signal = np.concatenate(pieces) / 1.75 * 0.4 * 32767
    return signal.astype("<i2").tobytes()


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


async def espeak_speech(
    text: str, *, speed: float = 1.0, sample_rate: int = SPEECH_SAMPLE_RATE
) -> bytes:
    """espeak-ng's rendering of ``text`` as mono 16-bit PCM at ``sample_rate``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed")
    wpm = str(max(80, min(int(ESPEAK_WPM * speed), 450)))
    # The text goes through stdin so that input starting with "-" is never read as an option.
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--stdout",
        "-v",
        "en-us",
        "-s",
        wpm,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(text.encode("utf-8"))
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace')}")
    audio = parse_wav(out)
    samples = np.frombuffer(audio.pcm, dtype="<i2")
    if audio.channels > 1:
        samples = samples.reshape(-1, audio.channels)[:, 0]
    if audio.sample_rate != sample_rate:
        samples = soxr.resample(samples, audio.sample_rate, sample_rate)
    return np.asarray(samples, dtype="<i2").tobytes()


async def synthesize(text: str, *, engine: SpeechEngine = "auto", speed: float = 1.0) -> bytes:
    """24 kHz mono s16le speech for ``text`` from the chosen engine.

    ``auto`` prefers espeak-ng and falls back to the tone when it is missing or fails, so the
    fake keeps answering on machines without it.
    """
    if engine == "tone" or (engine == "auto" and not espeak_available()):
        return tone_speech(text, speed=speed)
    try:
        pcm = await espeak_speech(text, speed=speed)
    except (RuntimeError, ValueError, OSError):
        if engine == "espeak":
            raise
        return tone_speech(text, speed=speed)
    # espeak-ng says nothing for input without pronounceable characters; never return silence.
    return pcm if pcm.strip(b"\x00") else tone_speech(text, speed=speed)
