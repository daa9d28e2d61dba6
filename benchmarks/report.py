"""The benchmark's outputs: the table (Markdown), ``bench.json`` and ``bench.png``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["check_plotting", "clean", "table", "targets", "write"]

BURST_TARGET = 16
#: The project's targets: voicebots against the bare aiortc floor.
MAX_RATIO = 1.5
#: Against pipecat's development runner running the same bot file.
TTFW_RUNNER_RATIO = 0.5
OFFER_RUNNER_RATIO = 1.0
CALLS_RUNNER_RATIO = 2.0
CPU_RUNNER_RATIO = 1.0
IDLE_PSS_MB = 45


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
    """Each target (against pipecat's runner, then against the bare floor), the value measured
    and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float, target: str, met: bool) -> None:
        out.append({"name": name, "value": value, "target": target, "met": bool(met)})

    for burst in results.get("first_word", {}).get("bursts", []):
        value = burst["ratio_runner_p50"]
        add(
            f"ttfw_p50_ratio_runner_burst_{burst['size']}",
            value,
            f"≤ {TTFW_RUNNER_RATIO}x runner",
            _num(value) <= TTFW_RUNNER_RATIO,
        )
    big = _burst(results, BURST_TARGET) or results["offer_answer"]["bursts"][-1]
    ours = big["voicebots"]
    size = big["size"]
    value = big.get("ratio_runner_p50", math.nan)
    add(
        f"offer_answer_p50_ratio_runner_burst_{size}",
        value,
        f"≤ {OFFER_RUNNER_RATIO}x runner",
        _num(value) <= OFFER_RUNNER_RATIO,
    )
    add(f"offer_answer_p50_ms_burst_{size}", ours["p50"], "≤ 25 ms", _num(ours["p50"]) <= 25)
    add(f"offer_answer_p99_ms_burst_{size}", ours["p99"], "≤ 60 ms", _num(ours["p99"]) <= 60)
    for q in ("p50", "p99"):  # the bare answer's own p50 and p99
        add(
            f"offer_answer_{q}_ratio_burst_{size}",
            big[f"ratio_{q}"],
            f"≤ {MAX_RATIO}x bare",
            _num(big[f"ratio_{q}"]) <= MAX_RATIO,
        )
    concurrency = results.get("concurrency")
    if concurrency is not None:
        mine, other = concurrency["voicebots"], concurrency["pipecat_runner"]
        add(
            "concurrent_calls_ratio_runner",
            concurrency["ratio_runner"],
            f"≥ {CALLS_RUNNER_RATIO}x runner",
            mine >= 1 and mine >= CALLS_RUNNER_RATIO * other,
        )
    cpu = results["cpu_per_call"]
    if "ratio_runner" in cpu:
        value = cpu["ratio_runner"]
        add(
            "cpu_per_call_ratio_runner",
            value,
            f"≤ {CPU_RUNNER_RATIO}x runner",
            _num(value) <= CPU_RUNNER_RATIO,
        )
    spawn = results["refill"]["spawn_ready_ms"]["p50"]
    add("spawn_ready_ms_p50", spawn, "≤ 100 ms", _num(spawn) <= 100)
    pss = results["idle_bot"]["pss_mb"]["p50"]
    add("idle_bot_pss_mb_p50", pss, f"≤ {IDLE_PSS_MB} MB", _num(pss) <= IDLE_PSS_MB)
    add("cpu_per_call_ratio", cpu["ratio"], f"≤ {MAX_RATIO}x bare", _num(cpu["ratio"]) <= MAX_RATIO)
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


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _pair(summary: dict[str, Any] | None, a: str, b: str, digits: int = 1) -> str:
    if not summary:
        return "-"
    return f"{_fmt(summary[a], digits=digits)} / {_fmt(summary[b], ' ms', digits)}"


def _ttfw_rows(results: dict[str, Any]) -> list[str]:
    first_word = results.get("first_word")
    if not first_word:
        return []
    rows = []
    for burst in first_word["bursts"]:
        ours, theirs, size = burst["voicebots"], burst["pipecat_runner"], burst["size"]
        rows.append(
            _row(
                f"time to first word p50, {size} at once (n={ours['n']} / {theirs['n']})",
                _fmt(ours["p50"], " ms"),
                _fmt(theirs["p50"], " ms"),
                "",
                _fmt(burst["ratio_runner_p50"], "x", 2),
                "",
                _met(results, f"ttfw_p50_ratio_runner_burst_{size}"),
            )
        )
    return rows


def _offer_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for burst in results["offer_answer"]["bursts"]:
        ours, bare, size = burst["voicebots"], burst["bare_aiortc"], burst["size"]
        goal = ""
        if size == _burst(results, BURST_TARGET).get("size"):
            to_runner = _met(results, f"offer_answer_p50_ratio_runner_burst_{size}")
            goal = (
                f"ratio to runner p50 {to_runner}"
                f"; p50 {_met(results, f'offer_answer_p50_ms_burst_{size}')}, "
                f"p99 {_met(results, f'offer_answer_p99_ms_burst_{size}')}, "
                f"ratio to bare p50 {_met(results, f'offer_answer_p50_ratio_burst_{size}')}, "
                f"p99 {_met(results, f'offer_answer_p99_ratio_burst_{size}')}"
            )
        rows.append(
            _row(
                f"offer→answer p50 / p99, burst of {size} (n={ours['n']})",
                _pair(ours, "p50", "p99"),
                _pair(burst.get("pipecat_runner"), "p50", "p99"),
                _pair(bare, "p50", "p99"),
                f"{_fmt(burst.get('ratio_runner_p50'), 'x', 2)} / "
                f"{_fmt(burst.get('ratio_runner_p99'), 'x', 2)}",
                f"{_fmt(burst['ratio_p50'], 'x', 2)} / {_fmt(burst['ratio_p99'], 'x', 2)}",
                goal,
            )
        )
    return rows


def _resource_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    refill = results["refill"]
    spawn = refill["spawn_ready_ms"]
    rows.append(
        _row(
            f"refill spawn→ready p50 / max, one bot (n={spawn['n']})",
            f"{_fmt(spawn['p50'])} / {_fmt(spawn['max'], ' ms')}",
            "",
            f"fresh `import bots.preload`: {_fmt(refill['fresh_import_ms']['p50'], ' ms')}",
            "",
            _fmt(refill["ratio_to_fresh_import"], "x", 2),
            _met(results, "spawn_ready_ms_p50"),
        )
    )
    for burst in refill["by_burst"]:
        if burst["size"] > 1:
            many = burst["spawn_ready_ms"]
            rows.append(
                _row(
                    f"refill spawn→ready p50 / max, {burst['size']} at once",
                    f"{_fmt(many['p50'])} / {_fmt(many['max'], ' ms')}",
                    *[""] * 5,
                )
            )
    rows.append(
        _row(
            "CPU to warm one bot, p50",
            _fmt(refill["cpu_ms_per_bot"]["p50"], " ms"),
            *[""] * 5,
        )
    )
    idle = results["idle_bot"]
    rows.append(
        _row(
            f"idle warm bot PSS / RSS / USS, p50 ({idle['bots']} idle bots)",
            f"{_fmt(idle['pss_mb']['p50'], digits=1)} / {_fmt(idle['rss_mb']['p50'], digits=1)}"
            f" / {_fmt(idle['uss_mb']['p50'], ' MB', 1)}",
            *[""] * 4,
            _met(results, "idle_bot_pss_mb_p50"),
        )
    )
    cpu = results["cpu_per_call"]
    runner_cpu = cpu.get("pipecat_runner") or {}
    rows.append(
        _row(
            f"CPU per active call, % of a core ({cpu['voicebots']['calls']} calls, "
            f"{_fmt(cpu['voicebots']['window_s'], ' s')})",
            _fmt(cpu["voicebots"]["per_call_pct"], " %", 1),
            _fmt(runner_cpu.get("per_call_pct"), " %", 1),
            _fmt(cpu["bare_aiortc"]["per_call_pct"], " %", 1),
            _fmt(cpu.get("ratio_runner"), "x", 2),
            _fmt(cpu["ratio"], "x", 2),
            f"÷ runner {_met(results, 'cpu_per_call_ratio_runner')}; "
            f"÷ bare {_met(results, 'cpu_per_call_ratio')}",
        )
    )
    return rows


def _overhead_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    overhead = results["overhead"]
    theirs = results.get("overhead_runner") or {}
    first = overhead["levels"][0] if overhead["levels"] else {"overhead_ms": {"n": 0}}
    runner_first = (theirs.get("levels") or [{}])[0]
    runner_n = (runner_first.get("overhead_ms") or {}).get("n", 0)
    rows.append(
        _row(
            f"voice-to-voice overhead p50 / p95, 1 call (n={first['overhead_ms']['n']} / "
            f"{runner_n})",
            f"{_fmt(overhead['p50_ms'])} / {_fmt(overhead['p95_ms'], ' ms')}",
            f"{_fmt(theirs.get('p50_ms'))} / {_fmt(theirs.get('p95_ms'), ' ms')}"
            if theirs
            else "-",
            "",
            _fmt(_ratio(overhead["p50_ms"], theirs.get("p50_ms")), "x", 2),
            "",
            _met(results, "overhead_p50_ms"),
        )
    )
    if "vad_stop_ms" in first:
        configured = first["overhead_configured_vad_ms"]
        runner_configured = runner_first.get("overhead_configured_vad_ms") or {}
        rows.append(
            _row(
                "… VAD stop subtracted, p50: measured in the bot (runner: voicebots' bots' "
                "measure) / configured",
                f"{_fmt(first['vad_stop_ms']['p50'])} / "
                f"{_fmt(overhead['subtracted']['vad_stop_ms'], ' ms')}",
                _fmt((runner_first.get("vad_stop_ms") or {}).get("p50"), " ms"),
                *[""] * 4,
            )
        )
        rows.append(
            _row(
                "… overhead p50 / p95 with the configured VAD stop subtracted instead",
                f"{_fmt(configured['p50'])} / {_fmt(configured['p95'], ' ms')}",
                _pair(runner_configured, "p50", "p95", 0) if runner_configured else "-",
                *[""] * 4,
            )
        )
    split = first.get("overhead_split_p50_ms") or {}
    if split:
        rows.append(
            _row(
                "… of which in (speech end → bot VAD stop) / bot (→ first audio out) / out "
                "(→ caller), p50",
                f"{_fmt(split['in_ms'])} / {_fmt(split['bot_ms'])} / "
                f"{_fmt(split['out_ms'], ' ms')}",
                *[""] * 5,
            )
        )
    concurrency = results.get("concurrency") or {}
    rows.append(
        _row(
            f"concurrent calls with overhead p95 < {_fmt(overhead['limit_ms'], ' ms')}",
            str(overhead["max_calls_p95_under_limit"]),
            str(concurrency.get("pipecat_runner", "-")),
            "",
            _fmt(concurrency.get("ratio_runner"), "x", 2),
            "",
            f"÷ runner {_met(results, 'concurrent_calls_ratio_runner')}; "
            f"{_met(results, 'concurrent_calls_p95_under_100ms')}",
        )
    )
    rows.append(
        _row(
            "concurrent calls with overhead p95 < 1-call p50 + "
            + _fmt(overhead["limit_ms"], " ms"),
            str(overhead["max_calls_p95_within_limit_of_1_call"]),
            str(theirs.get("max_calls_p95_within_limit_of_1_call", "-")),
            *[""] * 3,
            "(capacity, informative)",
        )
    )
    return rows


def _ratio(a: Any, b: Any) -> float:
    x, y = _num(a), _num(b)
    return math.nan if math.isnan(x) or math.isnan(y) or y == 0 else x / y


def table(results: dict[str, Any]) -> str:
    """The headline numbers as a Markdown table (what docs/performance.md carries)."""
    rows = [
        _row(
            "metric",
            "voicebots",
            "pipecat runner",
            "bare aiortc",
            "voicebots ÷ runner",
            "voicebots ÷ bare",
            "target",
        ),
        "|---|---|---|---|---|---|---|",
        *_ttfw_rows(results),
        *_offer_rows(results),
        *_resource_rows(results),
        *_overhead_rows(results),
    ]
    m = results["machine"]
    rows.append("")
    rows.append(f"{m['nproc']} x {m['cpu_model']}, Python {m['python']}, {m['date']}.")
    met = [t for t in results.get("targets", []) if t["met"]]
    rows.append(f"Targets met: {len(met)} of {len(results.get('targets', []))}.")
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
