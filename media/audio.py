"""Small audio helpers for the caller, the tests and the benchmark.

Everything here works on mono int16 numpy arrays ("samples"), the shape audio has on the wire
once Opus is decoded and downmixed. Levels are in dBFS relative to int16 full scale (32768), so
a full-scale square wave is 0 dBFS and digital silence is ``-inf``.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

__all__ = [
    "DEFAULT_SILENCE_DBFS",
    "Samples",
    "dbfs",
    "is_silent",
    "loud_limit",
    "read_wav",
    "resample",
    "rms",
    "speech_end",
    "speech_start",
    "write_wav",
]

Samples = npt.NDArray[np.int16]

#: Below this level a stretch of audio counts as silence. Opus-coded digital silence decodes to
#: a few LSBs of noise (about -80 dBFS), quiet speech sits around -35 dBFS.
DEFAULT_SILENCE_DBFS = -50.0

_FULL_SCALE = 32768.0


def resample(samples: Samples, from_rate: int, to_rate: int) -> Samples:
    """Resample mono int16 samples with soxr (high quality, whole-buffer)."""
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    out = soxr.resample(samples.astype(np.float32), from_rate, to_rate)
    return _to_int16(out)


def read_wav(path: str | Path, rate: int = 48000) -> Samples:
    """Read a PCM WAV file as mono int16 samples at ``rate``.

    Channels are averaged; 8-, 16-, 24- and 32-bit integer PCM are accepted (the stdlib ``wave``
    module does not read float WAVs, and neither does this). Raises ``ValueError`` for a file
    that is not such a WAV, ``OSError`` for one that cannot be opened.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            native_rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:  # not a RIFF/WAVE file, or truncated
        raise ValueError(f"{path}: not a readable PCM WAV ({exc or type(exc).__name__})") from None
    pcm = _decode_pcm(raw, width)
    if channels > 1:
        pcm = pcm[: pcm.size - pcm.size % channels].reshape(-1, channels).mean(axis=1)
    if native_rate != rate and pcm.size:
        pcm = soxr.resample(pcm.astype(np.float32), native_rate, rate)
    return _to_int16(pcm)


def write_wav(path: str | Path, samples: Samples, rate: int = 48000) -> None:
    """Write mono int16 samples as a 16-bit PCM WAV file."""
    data = np.ascontiguousarray(samples, dtype="<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data.tobytes())


def rms(samples: Samples) -> float:
    """Root mean square of the samples, in int16 units (0 for an empty array)."""
    if samples.size == 0:
        return 0.0
    # float64: squares of int16 overflow int32 sums on long buffers.
    values = samples.astype(np.float64)
    return math.sqrt(float(np.mean(values * values)))


def dbfs(samples: Samples) -> float:
    """RMS level in dBFS; ``-inf`` for digital silence or no samples."""
    level = rms(samples)
    if level <= 0.0:
        return float("-inf")
    return 20.0 * math.log10(level / _FULL_SCALE)


def is_silent(samples: Samples, threshold_dbfs: float = DEFAULT_SILENCE_DBFS) -> bool:
    """Whether the RMS level of ``samples`` is at or below ``threshold_dbfs``."""
    return dbfs(samples) <= threshold_dbfs


def speech_start(
    audio: Samples | str | Path, rate: int = 48000, threshold_dbfs: float = DEFAULT_SILENCE_DBFS
) -> float | None:
    """Seconds from the start to the first sample whose magnitude is above the threshold.

    ``audio`` is samples at ``rate`` or the path of a WAV (read at ``rate``). ``None`` when no
    sample is above it.
    """
    loud = _loud_indices(audio, rate, threshold_dbfs)
    return None if loud.size == 0 else float(loud[0]) / rate


def speech_end(
    audio: Samples | str | Path, rate: int = 48000, threshold_dbfs: float = DEFAULT_SILENCE_DBFS
) -> float | None:
    """Seconds from the start to just after the last sample above the threshold.

    This is where the speaker stopped: the reference point of voice-to-voice latency. ``audio``
    is samples at ``rate`` or the path of a WAV (read at ``rate``). ``None`` when no sample is
    above the threshold.
    """
    loud = _loud_indices(audio, rate, threshold_dbfs)
    return None if loud.size == 0 else float(loud[-1] + 1) / rate


def loud_limit(threshold_dbfs: float = DEFAULT_SILENCE_DBFS) -> float:
    """The magnitude an int16 sample must exceed to count as sound, not silence."""
    return _FULL_SCALE * 10.0 ** (threshold_dbfs / 20.0)


def _loud_indices(
    audio: Samples | str | Path, rate: int, threshold_dbfs: float
) -> npt.NDArray[np.intp]:
    samples = read_wav(audio, rate) if isinstance(audio, str | Path) else audio
    # int32: abs(-32768) does not fit in int16.
    return np.flatnonzero(np.abs(samples.astype(np.int32)) > loud_limit(threshold_dbfs))


def _decode_pcm(raw: bytes, width: int) -> npt.NDArray[np.float64]:
    """Little-endian PCM bytes to float samples in int16 scale."""
    if width == 1:
        # 8-bit WAV is unsigned with a 128 offset.
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64)
    if width == 3:
        bytes3 = np.frombuffer(raw[: len(raw) - len(raw) % 3], dtype=np.uint8).reshape(-1, 3)
        # Sign-extend the 24-bit value through the top byte of an int32, then scale down.
        as32 = (
            bytes3[:, 0].astype(np.int32) << 8
            | bytes3[:, 1].astype(np.int32) << 16
            | bytes3[:, 2].astype(np.int32) << 24
        )
        return as32.astype(np.float64) / 65536.0
    if width == 4:
        return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0
    raise ValueError(f"unsupported WAV sample width: {width} bytes")


def _to_int16(values: npt.NDArray[np.floating] | npt.NDArray[np.integer]) -> Samples:
    return np.clip(np.rint(values), -32768, 32767).astype(np.int16)
