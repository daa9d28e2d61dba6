"""Progress lines on stderr: elapsed time, phase, message."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._started = time.monotonic()
        self.phase = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def begin(self, phase: str) -> None:
        self.phase = phase
        self.say("…")

    def say(self, message: str) -> None:
        print(f"[{self.elapsed:6.1f}s] {self.phase:<10} {message}", file=self._stream, flush=True)
