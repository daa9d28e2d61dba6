"""The benchmark's outputs: the table (Markdown), ``bench.json`` and ``bench.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["check_plotting", "clean", "table", "targets", "write"]

BURST_TARGET = 16
MAX_RATIO = 1.5


def check_plotting() -> None:
    """Fail before a long run rather than after it when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "voicebots bench draws its plot with matplotlib: pip install -e '.[bench]'"
        ) from None


def clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, floats keep two decimals."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 2)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _fmt(value: Any, unit: str = "", digits: int = 0) -> str:
    number = _num(value)
    return "-" if math.isnan(number) else f"{number:.{digits}f}{unit}"


def _burst(results: dict[str, Any], size: int) -> dict[str, Any]:
    for burst in results["offer_answer"]["bursts"]:
        if burst["size"] == size:
            return dict(burst)
    return {}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each DESIGN.md target, the value measured and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, target: str, met: bool) -> None:
        out.append({"name": name, "value": value, "target": target, "met": bool(met)})

    big = _burst(results, BURST_TARGET) or results["offer_answer"]["bursts"][-1]
    ours = big["voicebots"]
    size = big["size"]
    add(f"offer_answer_p50_ms_burst_{size}", ours["p50"], "≤ 25 ms", _num(ours["p50"]) <= 25)
    add(f"offer_answer_p99_ms_burst_{size}", ours["p99"], "≤ 60 ms", _num(ours["p99"]) <= 60)
    for q in ("p50", "p99"):  # the bare answer's own p50 and p99
        add(
            f"offer_answer_{q}_ratio_burst_{size}",
            big[f"ratio_{q}"],
            f"≤ {MAX_RATIO}x bare",
            _num(big[f"ratio_{q}"]) <= MAX_RATIO,
        )
    spawn = results["refill"]["spawn_ready_ms"]["p50"]
    add("spawn_ready_ms_p50", spawn, "≤ 100 ms", _num(spawn) <= 100)
    pss = results["idle_bot"]["pss_mb"]["p50"]
    add("idle_bot_pss_mb_p50", pss, "≤ 60 MB", _num(pss) <= 60)
    cpu = results["cpu_per_call"]["ratio"]
    add("cpu_per_call_ratio", cpu, f"≤ {MAX_RATIO}x bare", _num(cpu) <= MAX_RATIO)
    overhead = results["overhead"]["p50_ms"]
    add("overhead_p50_ms", overhead, "≤ 60 ms", _num(overhead) <= 60)
    calls = results["overhead"]["max_calls_p95_under_limit"]
    add("concurrent_calls_p95_under_100ms", calls, "≥ 8", calls >= 8)
    return out


def _met(results: dict[str, Any], name: str) -> str:
    for target in results["targets"]:
        if target["name"] == name:
            return f"{target['target']} {'✓' if target['met'] else '✗'}"
    return ""


def table(results: dict[str, Any]) -> str:
    """The headline numbers as a Markdown table (what README carries)."""
    rows = [
        "| metric | voicebots | bare aiortc | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for burst in results["offer_answer"]["bursts"]:
        ours, bare, size = burst["voicebots"], burst["bare_aiortc"], burst["size"]
        goal = ""
        if size == _burst(results, BURST_TARGET).get("size"):
            goal = (
                f"p50 {_met(results, f'offer_answer_p50_ms_burst_{size}')}, "
                f"p99 {_met(results, f'offer_answer_p99_ms_burst_{size}')}, "
                f"ratio p50 {_met(results, f'offer_answer_p50_ratio_burst_{size}')}, "
                f"ratio p99 {_met(results, f'offer_answer_p99_ratio_burst_{size}')}"
            )
        rows.append(
            f"| offer→answer p50 / p99, burst of {size} (n={ours['n']}) "
            f"| {_fmt(ours['p50'], digits=1)} / {_fmt(ours['p99'], ' ms', 1)} "
            f"| {_fmt(bare['p50'], digits=1)} / {_fmt(bare['p99'], ' ms', 1)} "
            f"| {_fmt(burst['ratio_p50'], 'x', 2)} / {_fmt(burst['ratio_p99'], 'x', 2)} "
            f"| {goal} |"
        )
    refill = results["refill"]
    spawn = refill["spawn_ready_ms"]
    rows.append(
        f"| refill spawn→ready p50 / max, one bot (n={spawn['n']}) "
        f"| {_fmt(spawn['p50'])} / {_fmt(spawn['max'], ' ms')} "
        f"| fresh `import bots.preload`: {_fmt(refill['fresh_import_ms']['p50'], ' ms')} "
        f"| {_fmt(refill['ratio_to_fresh_import'], 'x', 2)} "
        f"| {_met(results, 'spawn_ready_ms_p50')} |"
    )
    for burst in refill["by_burst"]:
        if burst["size"] > 1:
            many = burst["spawn_ready_ms"]
            rows.append(
                f"| refill spawn→ready p50 / max, {burst['size']} at once "
                f"| {_fmt(many['p50'])} / {_fmt(many['max'], ' ms')} | | | |"
            )
    rows.append(
        f"| CPU to warm one bot, p50 | {_fmt(refill['cpu_ms_per_bot']['p50'], ' ms')} | | | |"
    )
    idle = results["idle_bot"]
    rows.append(
        f"| idle warm bot PSS / RSS / USS, p50 ({idle['bots']} idle bots) "
        f"| {_fmt(idle['pss_mb']['p50'], digits=1)} / {_fmt(idle['rss_mb']['p50'], digits=1)} / "
        f"{_fmt(idle['uss_mb']['p50'], ' MB', 1)} | | | {_met(results, 'idle_bot_pss_mb_p50')} |"
    )
    cpu = results["cpu_per_call"]
    rows.append(
        f"| CPU per active call, % of a core ({cpu['voicebots']['calls']} calls, "
        f"{_fmt(cpu['voicebots']['window_s'], ' s')}) "
        f"| {_fmt(cpu['voicebots']['per_call_pct'], ' %', 1)} "
        f"| {_fmt(cpu['bare_aiortc']['per_call_pct'], ' %', 1)} "
        f"| {_fmt(cpu['ratio'], 'x', 2)} | {_met(results, 'cpu_per_call_ratio')} |"
    )
    overhead = results["overhead"]
    first = overhead["levels"][0] if overhead["levels"] else {"overhead_ms": {"n": 0}}
    rows.append(
        f"| voice-to-voice overhead p50 / p95, 1 call (n={first['overhead_ms']['n']}) "
        f"| {_fmt(overhead['p50_ms'])} / {_fmt(overhead['p95_ms'], ' ms')} | | "
        f"| {_met(results, 'overhead_p50_ms')} |"
    )
    if "vad_stop_ms" in first:
        configured = first["overhead_configured_vad_ms"]
        rows.append(
            "| … VAD stop subtracted, p50: measured in the bot / configured "
            f"| {_fmt(first['vad_stop_ms']['p50'])} / "
            f"{_fmt(overhead['subtracted']['vad_stop_ms'], ' ms')} | | | |"
        )
        rows.append(
            "| … overhead p50 / p95 with the configured VAD stop subtracted instead "
            f"| {_fmt(configured['p50'])} / {_fmt(configured['p95'], ' ms')} | | | |"
        )
    split = first.get("overhead_split_p50_ms") or {}
    if split:
        rows.append(
            "| … of which in (speech end → bot VAD stop) / bot (→ first audio out) / out "
            f"(→ caller), p50 | {_fmt(split['in_ms'])} / {_fmt(split['bot_ms'])} / "
            f"{_fmt(split['out_ms'], ' ms')} | | | |"
        )
    rows.append(
        f"| concurrent calls with overhead p95 < {_fmt(overhead['limit_ms'], ' ms')} "
        f"| {overhead['max_calls_p95_under_limit']} | | "
        f"| {_met(results, 'concurrent_calls_p95_under_100ms')} |"
    )
    rows.append(
        f"| concurrent calls with overhead p95 < 1-call p50 + {_fmt(overhead['limit_ms'], ' ms')} "
        f"| {overhead['max_calls_p95_within_limit_of_1_call']} | | | (capacity, informative) |"
    )
    m = results["machine"]
    rows.append("")
    rows.append(f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}, {m['date']}.")
    return "\n".join(rows)


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``bench.json`` and ``bench.png`` into ``out_dir``; returns their paths."""
    from benchmarks.plot import plot

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    json_path.write_text(json.dumps(clean(results), indent=2, ensure_ascii=False) + "\n")
    png_path = out_dir / "bench.png"
    plot(results, png_path)
    return [json_path, png_path]
