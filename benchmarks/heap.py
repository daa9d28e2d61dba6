"""Keeping the callers' own garbage collector out of the measurements."""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]


def settle_heap() -> None:
    """Collect, then move what this process holds out of the collector's reach.

    The callers share this process with everything the benchmark imported (aiortc, httpx,
    pipecat's audio helpers): a full collection of a heap that size takes tens of
    milliseconds, and one falling inside a measured turn would stall the callers' clock, not
    the bots. Called
    before each stage and each measured round, as the bots' zygote does after its preload.
    """
    gc.collect()
    gc.freeze()
