"""The concurrency sweep: voice-to-voice overhead at rising numbers of simultaneous calls.

The same sweep runs against voicebots and against pipecat's runner (:class:`SweepTarget`);
what each call measures is in :mod:`benchmarks.overhead`. Levels rise until one saturates,
fails or the budget ends; a failing level is measured once more (a noisy machine). The
capacity is the highest level up to which every level's overhead p95 stayed under the limit.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.config import BenchConfig
from benchmarks.heap import settle_heap
from benchmarks.overhead import LevelRound, Subtracted, TurnSample, run_level
from benchmarks.progress import Progress
from benchmarks.stats import percentile, summarize

__all__ = ["SweepTarget", "overhead_sweep", "subtracted_of"]

#: Saturated: stop the sweep rather than step further up.
_SATURATED_FACTOR = 5.0


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class SweepTarget:
    name: str
    url: str
    #: Awaited before each round: voicebots waits for its warm pool to refill.
    ready: Callable[[], Awaitable[None]] = _nothing
    #: Seconds of VAD stop charged to a call whose server reports none (see overhead.py).
    vad_stop_fallback: float | None = None


def subtracted_of(config: BenchConfig) -> Subtracted:
    return Subtracted.of(
        vad_stop_secs=config.vad_stop_secs,
        turn_stop_secs=config.turn_stop_secs,
        transcription_delay=config.transcription_delay,
        first_token_delay=config.first_token_delay,
        speech_first_byte_delay=config.speech_first_byte_delay,
    )


def _level_report(calls: int, rounds: Sequence[LevelRound], limit_ms: float) -> dict[str, Any]:
    samples: list[TurnSample] = [s for r in rounds for s in r.samples]
    failures = [f for r in rounds for f in r.failures]
    overhead = summarize([s.overhead_ms for s in samples])
    milestones = sorted({k for s in samples for k in s.bot_turn if k.endswith("_ms")})
    return {
        "calls": calls,
        "rounds": len(rounds),
        "failures": len(failures),
        "failure_reasons": sorted(set(failures))[:5],
        "overhead_ms": overhead.to_json(),
        "overhead_configured_vad_ms": summarize(
            [s.overhead_configured_vad_ms for s in samples]
        ).to_json(),
        "vad_stop_ms": summarize([s.vad_stop_ms for s in samples]).to_json(),
        "voice_to_voice_ms": summarize([s.voice_to_voice_ms for s in samples]).to_json(),
        "bot_turn_p50_ms": {
            k: round(percentile([s.bot_turn[k] for s in samples if k in s.bot_turn], 50), 1)
            for k in milestones
        },
        "overhead_split_p50_ms": {
            part: round(percentile([split[part] for split in splits], 50), 1)
            for part in ("in_ms", "bot_ms", "out_ms")
        }
        if (splits := [s.split for s in samples if s.split is not None])
        else {},
        "caller_loop_lag_ms": round(max((r.loop_lag_ms for r in rounds), default=0.0), 1),
        "ok": bool(samples) and not failures and overhead.p95 < limit_ms,
    }


async def overhead_sweep(
    config: BenchConfig,
    target: SweepTarget,
    wav: Path,
    speech_s: float,
    progress: Progress,
) -> dict[str, Any]:
    subtracted = subtracted_of(config)
    limit = config.overhead_p95_limit_ms
    started = time.monotonic()
    levels: list[dict[str, Any]] = []
    best, prefix_ok = 0, True
    for calls in config.overhead_levels:
        if time.monotonic() - started > config.overhead_budget_s or calls > config.warm_bots:
            break
        attempts = 2 if prefix_ok else 1  # a failing level is measured again: noisy machine
        for _attempt in range(attempts):
            rounds = []
            for _ in range(max(1, math.ceil(config.overhead_min_samples / calls))):
                await target.ready()
                await asyncio.sleep(config.settle_s)
                settle_heap()
                rounds.append(
                    await run_level(
                        target.url, wav, calls, subtracted, speech_s, target.vad_stop_fallback
                    )
                )
            level = _level_report(calls, rounds, limit)
            if level["ok"]:
                break
        levels.append(level)
        p95 = level["overhead_ms"]["p95"]
        progress.say(
            f"{target.name} {calls:>2} calls: overhead p50 {level['overhead_ms']['p50']:.0f} ms, "
            f"p95 {p95:.0f} ms{'' if level['ok'] else ' (over the limit)'}"
        )
        prefix_ok = prefix_ok and level["ok"]
        if prefix_ok:
            best = calls
        if level["failures"] or not p95 < _SATURATED_FACTOR * limit:
            break
    first = levels[0]["overhead_ms"] if levels else summarize([]).to_json()
    # Capacity apart from the fixed part of the overhead: how far concurrency goes before
    # p95 grows more than the limit above what one call alone sees.
    headroom = 0
    for level in levels:
        if level["failures"] or not level["overhead_ms"]["p95"] <= first["p50"] + limit:
            break
        headroom = level["calls"]
    return {
        "subtracted": subtracted.to_json(),
        "vad_stop_fallback_ms": None
        if target.vad_stop_fallback is None
        else round(target.vad_stop_fallback * 1000, 1),
        "limit_ms": limit,
        "p50_ms": first["p50"],
        "p95_ms": first["p95"],
        "max_calls_p95_under_limit": best,
        "max_calls_p95_within_limit_of_1_call": headroom,
        "levels": levels,
    }
