"""Runs every measurement in one go and writes the report.

Three systems: voicebots, pipecat's development runner running the same bot file, and the
bare aiortc echo (:mod:`benchmarks.systems`). Order:

1. speech WAVs (espeak-ng), and the refill reference: fresh interpreters importing
   ``bots.preload``;
2. time to first word (:mod:`benchmarks.first_word`): voicebots and the runner started with
   the greeting on, bursts alternating; then they stop;
3. voicebots, the runner and the bare echo start without a greeting, and stay up throughout,
   so each comparison below sees the same machine;
4. idle warm bots' memory, once the pool has settled;
5. offer → answer bursts, alternating voicebots, the runner and the bare echo round by round;
   after each voicebots burst, the spawn → ready time of the bots that refill the pool;
6. CPU per call: voicebots' bots, the runner's process, the bare echo's process;
7. voice-to-voice overhead at rising concurrency (:mod:`benchmarks.sweep`), on voicebots and
   then on the runner.
"""

from __future__ import annotations

import asyncio
import math
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import report
from benchmarks.config import BenchConfig, parse_args
from benchmarks.cpu import measure_cpu
from benchmarks.first_word import first_words
from benchmarks.heap import settle_heap
from benchmarks.offers import run_burst
from benchmarks.procfs import live_cpu_seconds, memory, parent_pid
from benchmarks.progress import Progress
from benchmarks.speech import continuous_wav, utterance_wav
from benchmarks.stats import percentile, ratio, summarize
from benchmarks.sweep import SweepTarget, overhead_sweep
from benchmarks.systems import Systems, Voicebots, run_systems

__all__ = ["main", "run"]


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
            out.append((float(bot["spawn_ms"]), live_cpu_seconds(bot["pid"]) * 1000))
        except FileNotFoundError:
            pass
    return out


async def offer_bursts(
    config: BenchConfig, systems: Systems, http: httpx.AsyncClient, progress: Progress
) -> tuple[list[dict[str, Any]], dict[int, list[tuple[float, float]]]]:
    """Each round: a burst at voicebots, then at pipecat's runner, then at the bare echo."""
    vb, runner, echo = systems.voicebots, systems.runner, systems.echo
    targets = ((vb.name, vb.url), (runner.name, runner.url), (echo.name, echo.url))
    for _name, url in targets:  # warm-up: connections, first-use code paths; not recorded
        await run_burst(url, 1, http)
    await refill(vb, http, config.warm_bots)
    bursts: list[dict[str, Any]] = []
    refills: dict[int, list[tuple[float, float]]] = {}
    for size, rounds in zip(config.bursts, config.burst_rounds, strict=True):
        answers: dict[str, list[float]] = {name: [] for name, _ in targets}
        failures = {name: 0 for name, _ in targets}
        unconnected = {name: 0 for name, _ in targets}
        refills[size] = []
        for round_no in range(1, rounds + 1):
            for name, url in targets:
                result = await run_burst(url, size, http)
                answers[name].extend(result.answers_ms)
                failures[name] += len(result.failures)
                unconnected[name] += size - result.connected
                if name == vb.name:
                    refills[size].extend(await refill(vb, http, config.warm_bots))
                await asyncio.sleep(config.settle_s)
                settle_heap()
            progress.say(
                f"burst {size:>2} round {round_no}/{rounds}: p50 "
                f"voicebots {percentile(answers[vb.name], 50):.1f} ms, "
                f"pipecat runner {percentile(answers[runner.name], 50):.1f} ms, "
                f"bare {percentile(answers[echo.name], 50):.1f} ms"
            )
        ours, theirs = summarize(answers[vb.name]), summarize(answers[runner.name])
        bare = summarize(answers[echo.name])
        bursts.append(
            {
                "size": size,
                vb.name: ours.to_json(),
                runner.name: theirs.to_json(),
                echo.name: bare.to_json(),
                "ratio_p50": ratio(ours.p50, bare.p50),
                "ratio_p99": ratio(ours.p99, bare.p99),
                "ratio_runner_p50": ratio(ours.p50, theirs.p50),
                "ratio_runner_p99": ratio(ours.p99, theirs.p99),
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
    """voicebots' bots, then pipecat's runner process, then the bare echo process."""
    vb, runner, echo = systems.voicebots, systems.runner, systems.echo
    await vb.wait_warm(http, config.warm_bots)

    async def bot_pids(sessions: set[str]) -> list[int]:
        return await vb.call_pids(http, sessions)

    def one_process(pid: int) -> Callable[[set[str]], Awaitable[list[int]]]:
        async def pids(_sessions: set[str]) -> list[int]:
            return [pid]

        return pids

    infra = [p.pid for p in vb.system.processes.values()]
    ours = await measure_cpu(
        vb.url, wav, config.cpu_calls, config.cpu_window_s, bot_pids, infra_pids=infra
    )
    progress.say(f"voicebots: {ours.per_call_pct:.1f} % of a core per call")
    await refill(vb, http, config.warm_bots)
    await asyncio.sleep(config.settle_s)
    theirs = await measure_cpu(
        runner.url, wav, config.cpu_calls, config.cpu_window_s, one_process(runner.pid)
    )
    progress.say(f"pipecat runner: {theirs.per_call_pct:.1f} % of a core per call")
    await asyncio.sleep(config.settle_s)
    bare = await measure_cpu(
        echo.url, wav, config.cpu_calls, config.cpu_window_s, one_process(echo.pid)
    )
    progress.say(f"bare aiortc: {bare.per_call_pct:.1f} % of a core per call")
    return {
        vb.name: ours.to_json(),
        runner.name: theirs.to_json(),
        echo.name: bare.to_json(),
        "ratio": ratio(ours.per_call_pct, bare.per_call_pct),
        "ratio_runner": ratio(ours.per_call_pct, theirs.per_call_pct),
    }


async def overhead_sweeps(
    config: BenchConfig,
    systems: Systems,
    http: httpx.AsyncClient,
    wav: Path,
    speech_s: float,
    progress: Progress,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sweep on voicebots, then on pipecat's runner.

    The runner keeps no session record, so its calls are charged the VAD stop voicebots'
    bots measured (p50, the same bot file and VAD on the same utterance) — else the
    configured one: both systems then have the same waits subtracted.
    """
    vb, runner = systems.voicebots, systems.runner

    async def pool_warm() -> None:
        await vb.wait_warm(http, config.warm_bots)

    ours = await overhead_sweep(
        config, SweepTarget(vb.name, vb.url, pool_warm), wav, speech_s, progress
    )
    measured = ours["levels"][0]["vad_stop_ms"]["p50"] if ours["levels"] else math.nan
    fallback = None if math.isnan(measured) else measured / 1000
    theirs = await overhead_sweep(
        config,
        SweepTarget(runner.name, runner.url, vad_stop_fallback=fallback),
        wav,
        speech_s,
        progress,
    )
    return ours, theirs


def concurrency(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    mine, other = ours["max_calls_p95_under_limit"], theirs["max_calls_p95_under_limit"]
    return {
        "limit_ms": ours["limit_ms"],
        "voicebots": mine,
        "pipecat_runner": other,
        "ratio_runner": ratio(float(mine), float(other)),
    }


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
    results: dict[str, Any] = {"schema": 2, "machine": machine(), "config": config.to_json()}
    progress.begin("ttfw")
    progress.say("starting voicebots and pipecat's runner with the greeting on")
    settle_heap()
    results["first_word"] = await first_words(config, work, progress)
    progress.begin("setup")
    progress.say(
        f"starting voicebots ({config.warm_bots} warm bots), pipecat's runner and the bare "
        "echo server"
    )
    with run_systems(config) as systems:
        vb = systems.voicebots
        results["logs"] = str(vb.system.logs)
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            progress.begin("memory")
            settle_heap()
            await vb.wait_warm(http, config.warm_bots)
            await asyncio.sleep(2.0)  # let lazy first allocations and page faults settle
            results["idle_bot"] = await idle_memory(vb, http)
            results["limits"] = (await vb.status(http))["pool"]["limits"]
            progress.say(f"idle bot PSS p50 {results['idle_bot']['pss_mb']['p50']} MB")
            progress.begin("offers")
            settle_heap()
            bursts, refills = await offer_bursts(config, systems, http, progress)
            results["offer_answer"] = {"bursts": bursts}
            results["refill"] = refill_report(imports, refills)
            progress.begin("cpu")
            settle_heap()
            results["cpu_per_call"] = await cpu_per_call(
                config, systems, http, continuous, progress
            )
            progress.begin("overhead")
            settle_heap()
            ours, theirs = await overhead_sweeps(
                config, systems, http, utterance, speech_s, progress
            )
            results["overhead"], results["overhead_runner"] = ours, theirs
            results["concurrency"] = concurrency(ours, theirs)
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
