"""The caller's speech, synthesized by espeak-ng when the benchmark starts.

espeak-ng writes digital silence around and between words, so the end of speech in the file
(:func:`media.audio.speech_end`) is exact — unlike the test fixture, whose noise floor sits
above the caller's silence threshold.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from media.audio import read_wav, speech_end, speech_start, write_wav

__all__ = ["CONTINUOUS_TEXT", "UTTERANCE_TEXT", "continuous_wav", "utterance_wav"]

RATE = 48000
#: One question without commas, so no pause inside it can end the turn early.
UTTERANCE_TEXT = "What time is it in London right now"
#: Read on a loop for the CPU window: speech with only short pauses between sentences.
CONTINUOUS_TEXT = (
    "The quick brown fox jumps over the lazy dog while the farmer counts his sheep. "
    "Seven silver swans swim slowly across the quiet lake at the break of dawn. "
    "A gentle breeze carries the smell of fresh bread from the bakery down the street. "
    "Children laugh and play in the park as their parents talk on the wooden benches."
)


def _espeak(text: str) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(
            "the benchmark synthesizes its speech with espeak-ng: apt-get install espeak-ng"
        )
    with tempfile.TemporaryDirectory(prefix="voicebots-bench-") as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run(
            [exe, "-v", "en-us", "-s", "175", "-w", str(raw), "--", text],
            check=True,
            capture_output=True,
            timeout=60,
        )
        samples = read_wav(raw, RATE)
    start, end = speech_start(samples, RATE), speech_end(samples, RATE)
    if start is None or end is None:
        raise RuntimeError(f"espeak-ng produced silence for {text!r}")
    return samples[int(start * RATE) : math.ceil(end * RATE)]


def utterance_wav(path: Path, lead_silence: float = 0.3) -> float:
    """Write one spoken question after ``lead_silence`` seconds of silence.

    Returns the seconds from the start of the file to the end of speech. After the file the
    caller sends digital silence, which is what ends the turn.
    """
    speech = _espeak(UTTERANCE_TEXT)
    lead = np.zeros(int(lead_silence * RATE), np.int16)
    write_wav(path, np.concatenate([lead, speech]), RATE)
    return lead.size / RATE + speech.size / RATE


def continuous_wav(path: Path, seconds: float) -> float:
    """Write at least ``seconds`` of speech: a paragraph read again and again.

    Returns the file's length in seconds.
    """
    paragraph = _espeak(CONTINUOUS_TEXT)
    gap = np.zeros(int(0.15 * RATE), np.int16)  # short: one turn per pass at most
    unit = np.concatenate([paragraph, gap])
    repeats = max(1, math.ceil(seconds * RATE / unit.size))
    samples = np.tile(unit, repeats)
    write_wav(path, samples, RATE)
    return samples.size / RATE
