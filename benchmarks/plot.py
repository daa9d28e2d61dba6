"""``bench.png``: four panels — offer→answer, refill, resources, overhead vs concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

__all__ = ["plot"]

OURS, RUNNER, BARE = "tab:blue", "tab:orange", "tab:gray"


def _offers(ax: Axes, results: dict[str, Any]) -> None:
    bursts = results["offer_answer"]["bursts"]
    xs = range(len(bursts))
    width = 0.14
    for offset, system, stat, color, alpha in (
        (-2.5, "voicebots", "p50", OURS, 1.0),
        (-1.5, "voicebots", "p99", OURS, 0.5),
        (-0.5, "pipecat_runner", "p50", RUNNER, 1.0),
        (0.5, "pipecat_runner", "p99", RUNNER, 0.5),
        (1.5, "bare_aiortc", "p50", BARE, 1.0),
        (2.5, "bare_aiortc", "p99", BARE, 0.5),
    ):
        values = [(b.get(system) or {}).get(stat) or 0.0 for b in bursts]
        ax.bar(
            [x + offset * width for x in xs],
            values,
            width,
            color=color,
            alpha=alpha,
            label=f"{system} {stat}",
        )
    ax.set_xticks(list(xs), [f"burst {b['size']}" for b in bursts])
    ax.set_ylabel("offer → answer (ms)")
    ax.set_title("Warm offer → answer")
    ax.legend(fontsize=7)


def _refill(ax: Axes, results: dict[str, Any]) -> None:
    refill = results["refill"]
    labels = ["fresh import"] + [f"refill x{b['size']}" for b in refill["by_burst"]]
    values = [refill["fresh_import_ms"]["p50"]] + [
        b["spawn_ready_ms"]["p50"] for b in refill["by_burst"]
    ]
    colors = [BARE] + [OURS] * len(refill["by_burst"])
    ax.bar(labels, [v or 0.0 for v in values], color=colors)
    ax.axhline(100, color="tab:red", linestyle="--", linewidth=1, label="target 100 ms")
    ax.set_ylabel("spawn → ready p50 (ms)")
    ax.set_title("Refill (bots started at once after a burst)")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)


def _resources(ax: Axes, results: dict[str, Any]) -> None:
    idle, cpu = results["idle_bot"], results["cpu_per_call"]
    labels = ["idle PSS\n(MB)", "idle RSS\n(MB)", "idle USS\n(MB)", "CPU/call\nvoicebots (%)"]
    values = [
        idle["pss_mb"]["p50"],
        idle["rss_mb"]["p50"],
        idle["uss_mb"]["p50"],
        cpu["voicebots"]["per_call_pct"],
    ]
    ax.bar(labels, [v or 0.0 for v in values], color=OURS)
    runner = (cpu.get("pipecat_runner") or {}).get("per_call_pct") or 0.0
    ax.bar(["CPU/call\nrunner (%)"], [runner], color=RUNNER)
    ax.bar(["CPU/call\nbare (%)"], [cpu["bare_aiortc"]["per_call_pct"] or 0.0], color=BARE)
    ax.set_title("Idle bot memory, CPU per active call")
    ax.tick_params(axis="x", labelsize=7)


def _overhead(ax: Axes, results: dict[str, Any]) -> None:
    overhead = results["overhead"]
    levels = overhead["levels"]
    calls = [level["calls"] for level in levels]
    for stat, style in (("p50", "o-"), ("p95", "s--")):
        ax.plot(
            calls,
            [lv["overhead_ms"][stat] for lv in levels],
            style,
            label=f"voicebots {stat}",
            color=OURS,
        )
    runner_levels = (results.get("overhead_runner") or {}).get("levels") or []
    for stat, style in (("p50", "o-"), ("p95", "s--")):
        ax.plot(
            [lv["calls"] for lv in runner_levels],
            [lv["overhead_ms"][stat] for lv in runner_levels],
            style,
            label=f"pipecat runner {stat}",
            color=RUNNER,
        )
    calls = sorted({*calls, *(lv["calls"] for lv in runner_levels)})
    ax.axhline(overhead["limit_ms"], color="tab:red", linestyle="--", linewidth=1, label="limit")
    ax.set_ylim(bottom=0)  # the limit line stays in view when every level is above it
    ax.set_xticks(calls)
    ax.set_xlabel("concurrent calls")
    ax.set_ylabel("voice-to-voice overhead (ms)")
    ax.set_title("Framework overhead vs concurrency")
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    _offers(axes[0][0], results)
    _refill(axes[0][1], results)
    _resources(axes[1][0], results)
    _overhead(axes[1][1], results)
    m = results["machine"]
    figure.suptitle(f"voicebots bench — {m['nproc']} x {m['cpu_model']}, {m['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
