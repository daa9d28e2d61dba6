"""Runs every measurement in one go and writes the report.

Order (both systems are up throughout, so each comparison sees the same machine):

1. speech WAVs (espeak-ng), and the refill reference: fresh interpreters importing
   ``bots.preload``;
2. idle warm bots' memory, once the pool has settled;
3. offer → answer bursts, alternating voicebots and the bare echo round by round; after each
   voicebots burst, the spawn → ready time of the bots that refill the pool;
4. CPU per call, voicebots then the bare echo;
5. voice-to-voice overhead at rising concurrency, on voicebots.
"""

from __future__ import annotations

import asyncio
import gc
import math
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import report
from benchmarks.config import BenchConfig, parse_args
from benchmarks.cpu import measure_cpu
from benchmarks.offers import run_burst
from benchmarks.overhead import LevelRound, Subtracted, TurnSample, run_level
from benchmarks.procfs import cpu_seconds, memory, parent_pid
from benchmarks.progress import Progress
from benchmarks.speech import continuous_wav, utterance_wav
from benchmarks.stats import percentile, ratio, summarize
from benchmarks.systems import Systems, Voicebots, run_systems
from tests.system import ROOT

__all__ = ["main", "run"]

#: Saturated: stop the overhead sweep rather than step further up.
_SATURATED_FACTOR = 5.0


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return {
        "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()),
        "cpu_model": model,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def fresh_import_ms(runs: int) -> list[float]:
    """Wall time of ``python -c 'import bots.preload'``: a bot without the zygote."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import bots.preload"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        times.append((time.perf_counter() - started) * 1000)
    return times


async def idle_memory(vb: Voicebots, http: httpx.AsyncClient) -> dict[str, Any]:
    bots = await vb.idle_bots(http)
    vb.seen |= {bot["pid"] for bot in bots}
    readings = [memory(bot["pid"]) for bot in bots]
    zygote = memory(parent_pid(bots[0]["pid"]))
    return {
        "bots": len(readings),
        "pss_mb": summarize([m.pss for m in readings]).to_json(),
        "rss_mb": summarize([m.rss for m in readings]).to_json(),
        "uss_mb": summarize([m.uss for m in readings]).to_json(),
        "zygote_rss_mb": round(zygote.rss, 1),
        "zygote_pss_mb": round(zygote.pss, 1),
    }


async def refill(vb: Voicebots, http: httpx.AsyncClient, idle: int) -> list[tuple[float, float]]:
    """Wait for the pool to refill; (spawn → ready ms, CPU ms) of each bot not seen before."""
    await vb.wait_warm(http, idle)
    fresh = [bot for bot in await vb.idle_bots(http) if bot["pid"] not in vb.seen]
    vb.seen |= {bot["pid"] for bot in fresh}
    out = []
    for bot in fresh:
        try:
            out.append((float(bot["spawn_ms"]), cpu_seconds(bot["pid"]) * 1000))
        except FileNotFoundError:
            pass
    return out


async def offer_bursts(
    config: BenchConfig, systems: Systems, http: httpx.AsyncClient, progress: Progress
) -> tuple[list[dict[str, Any]], dict[int, list[tuple[float, float]]]]:
    vb, echo = systems.voicebots, systems.echo
    for target in (vb, echo):  # warm-up: connections, first-use code paths; not recorded
        await run_burst(target.url, 1, http)
    await refill(vb, http, config.warm_bots)
    bursts: list[dict[str, Any]] = []
    refills: dict[int, list[tuple[float, float]]] = {}
    for size, rounds in zip(config.bursts, config.burst_rounds, strict=True):
        answers: dict[str, list[float]] = {vb.name: [], echo.name: []}
        failures = {vb.name: 0, echo.name: 0}
        unconnected = {vb.name: 0, echo.name: 0}
        refills[size] = []
        for round_no in range(1, rounds + 1):
            for name, url in ((vb.name, vb.url), (echo.name, echo.url)):
                result = await run_burst(url, size, http)
                answers[name].extend(result.answers_ms)
                failures[name] += len(result.failures)
                unconnected[name] += size - result.connected
                if name == vb.name:
                    refills[size].extend(await refill(vb, http, config.warm_bots))
                await asyncio.sleep(config.settle_s)
                _settle_heap()
            progress.say(
                f"burst {size:>2} round {round_no}/{rounds}: p50 "
                f"voicebots {percentile(answers[vb.name], 50):.1f} ms, "
                f"bare {percentile(answers[echo.name], 50):.1f} ms"
            )
        ours, bare = summarize(answers[vb.name]), summarize(answers[echo.name])
        bursts.append(
            {
                "size": size,
                vb.name: ours.to_json(),
                echo.name: bare.to_json(),
                "ratio_p50": ratio(ours.p50, bare.p50),
                "ratio_p99": ratio(ours.p99, bare.p99),
                "failures": failures,
                "not_connected": unconnected,
            }
        )
    return bursts, refills


def refill_report(
    imports_ms: list[float], refills: dict[int, list[tuple[float, float]]]
) -> dict[str, Any]:
    single = [ms for ms, _ in refills.get(1, [])]
    every = [pair for pairs in refills.values() for pair in pairs]
    fresh = summarize(imports_ms)
    spawn = summarize(single or [ms for ms, _ in every])
    return {
        "fresh_import_ms": fresh.to_json(),
        "spawn_ready_ms": spawn.to_json(),
        "ratio_to_fresh_import": ratio(spawn.p50, fresh.p50),
        "cpu_ms_per_bot": summarize([cpu for _, cpu in every]).to_json(),
        "by_burst": [
            {"size": size, "spawn_ready_ms": summarize([ms for ms, _ in pairs]).to_json()}
            for size, pairs in refills.items()
        ],
    }


async def cpu_per_call(
    config: BenchConfig, systems: Systems, http: httpx.AsyncClient, wav: Path, progress: Progress
) -> dict[str, Any]:
    vb, echo = systems.voicebots, systems.echo
    await vb.wait_warm(http, config.warm_bots)

    async def bot_pids(sessions: set[str]) -> list[int]:
        return await vb.call_pids(http, sessions)

    async def echo_pid(_sessions: set[str]) -> list[int]:
        return [echo.pid]

    infra = [p.pid for p in vb.system.processes.values()]
    ours = await measure_cpu(
        vb.url, wav, config.cpu_calls, config.cpu_window_s, bot_pids, infra_pids=infra
    )
    progress.say(f"voicebots: {ours.per_call_pct:.1f} % of a core per call")
    await refill(vb, http, config.warm_bots)
    await asyncio.sleep(config.settle_s)
    bare = await measure_cpu(echo.url, wav, config.cpu_calls, config.cpu_window_s, echo_pid)
    progress.say(f"bare aiortc: {bare.per_call_pct:.1f} % of a core per call")
    return {
        vb.name: ours.to_json(),
        echo.name: bare.to_json(),
        "ratio": ratio(ours.per_call_pct, bare.per_call_pct),
    }


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
    vb: Voicebots,
    http: httpx.AsyncClient,
    wav: Path,
    speech_s: float,
    progress: Progress,
) -> dict[str, Any]:
    subtracted = Subtracted.of(
        vad_stop_secs=config.vad_stop_secs,
        turn_stop_secs=config.turn_stop_secs,
        transcription_delay=config.transcription_delay,
        first_token_delay=config.first_token_delay,
        speech_first_byte_delay=config.speech_first_byte_delay,
    )
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
                await vb.wait_warm(http, config.warm_bots)
                await asyncio.sleep(config.settle_s)
                _settle_heap()
                rounds.append(await run_level(vb.url, wav, calls, subtracted, speech_s))
            level = _level_report(calls, rounds, limit)
            if level["ok"]:
                break
        levels.append(level)
        p95 = level["overhead_ms"]["p95"]
        progress.say(
            f"{calls:>2} calls: overhead p50 {level['overhead_ms']['p50']:.0f} ms, "
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
        "limit_ms": limit,
        "p50_ms": first["p50"],
        "p95_ms": first["p95"],
        "max_calls_p95_under_limit": best,
        "max_calls_p95_within_limit_of_1_call": headroom,
        "levels": levels,
    }


def _settle_heap() -> None:
    """Collect, then move what this process holds out of the collector's reach.

    The callers share this process with everything the benchmark imported (aiortc, httpx,
    pipecat's audio helpers): a full collection of that heap took 30 to 100 ms here, and one
    falling inside a measured turn would stall the callers' clock, not the bots. Called
    before each stage and each measured round, as the bots' zygote does after its preload.
    """
    gc.collect()
    gc.freeze()


async def run(config: BenchConfig, progress: Progress) -> dict[str, Any]:
    work = config.out_dir / "wav"
    work.mkdir(parents=True, exist_ok=True)
    progress.begin("setup")
    utterance = work / "utterance.wav"
    speech_s = utterance_wav(utterance)
    continuous = work / "continuous.wav"
    continuous_wav(continuous, config.cpu_window_s + 15.0)
    imports = fresh_import_ms(config.import_runs)
    progress.say(f"fresh interpreter importing bots.preload: {percentile(imports, 50):.0f} ms")
    results: dict[str, Any] = {"schema": 1, "machine": machine(), "config": config.to_json()}
    progress.say(f"starting voicebots ({config.warm_bots} warm bots) and the bare echo server")
    with run_systems(config) as systems:
        vb = systems.voicebots
        results["logs"] = str(vb.system.logs)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            progress.begin("memory")
            _settle_heap()
            await vb.wait_warm(http, config.warm_bots)
            await asyncio.sleep(2.0)  # let lazy first allocations and page faults settle
            results["idle_bot"] = await idle_memory(vb, http)
            results["limits"] = (await vb.status(http))["pool"]["limits"]
            progress.say(f"idle bot PSS p50 {results['idle_bot']['pss_mb']['p50']} MB")
            progress.begin("offers")
            _settle_heap()
            bursts, refills = await offer_bursts(config, systems, http, progress)
            results["offer_answer"] = {"bursts": bursts}
            results["refill"] = refill_report(imports, refills)
            progress.begin("cpu")
            _settle_heap()
            results["cpu_per_call"] = await cpu_per_call(
                config, systems, http, continuous, progress
            )
            progress.begin("overhead")
            _settle_heap()
            results["overhead"] = await overhead_sweep(
                config, vb, http, utterance, speech_s, progress
            )
    results["targets"] = report.targets(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``voicebots bench``: run, print the table, write ``bench.json`` and ``bench.png``."""
    config = parse_args(sys.argv[1:] if argv is None else argv)
    report.check_plotting()
    config = replace(config, out_dir=config.out_dir.resolve())
    progress = Progress()
    results = asyncio.run(run(config, progress))
    progress.begin("report")
    paths = report.write(results, config.out_dir)
    print(report.table(results))
    progress.say(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
