"""``voicebots bench --small`` runs end to end and reports every metric.

No timing is asserted (CI machines vary); the point is that the benchmark cannot rot: every
number is present, of the right type and plausible — for voicebots, for pipecat's development
runner running the same bot file, and for the bare aiortc floor — and the plot is written.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.overhead import Subtracted
from benchmarks.report import clean, table, targets
from benchmarks.stats import percentile, summarize
from tests import ROOT

SUMMARY_KEYS = {"n", "p50", "p95", "p99", "mean", "min", "max"}
SYSTEMS = ("voicebots", "pipecat_runner", "bare_aiortc")


def _positive_summary(summary: dict[str, Any], what: str) -> None:
    assert set(summary) == SUMMARY_KEYS, what
    assert isinstance(summary["n"], int) and summary["n"] >= 1, what
    for key in SUMMARY_KEYS - {"n"}:
        value = summary[key]
        assert isinstance(value, int | float) and value > 0, f"{what}.{key} = {value!r}"
    assert summary["min"] <= summary["p50"] <= summary["p99"] <= summary["max"], what


def _positive(value: Any, what: str) -> None:
    assert isinstance(value, int | float) and value > 0, f"{what} = {value!r}"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, "-m", "voicebots", "bench", "--small", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads((out / "bench.json").read_text()), out, run.stdout + run.stderr


def test_time_to_first_word(bench: tuple[dict[str, Any], Path, str]) -> None:
    first_word = bench[0]["first_word"]
    assert first_word["greeting"] and first_word["subtracted_ms"] == pytest.approx(100)
    bursts = first_word["bursts"]
    assert [b["size"] for b in bursts] == [1, 2]
    for burst in bursts:
        for system in ("voicebots", "pipecat_runner"):
            _positive_summary(burst[system], f"ttfw {burst['size']} {system}")
            assert burst["failures"][system] == 0, burst["failure_reasons"]
        assert burst["voicebots"]["n"] == burst["size"]  # one round of each size
        _positive(burst["ratio_runner_p50"], "ratio_runner_p50")


def test_offer_answer_for_each_burst(bench: tuple[dict[str, Any], Path, str]) -> None:
    results = bench[0]
    bursts = results["offer_answer"]["bursts"]
    assert [b["size"] for b in bursts] == [1, 2]
    for burst in bursts:
        for system in SYSTEMS:
            _positive_summary(burst[system], f"burst {burst['size']} {system}")
            assert burst["failures"][system] == 0
            assert burst["not_connected"][system] == 0
        for key in ("ratio_p50", "ratio_p99", "ratio_runner_p50", "ratio_runner_p99"):
            _positive(burst[key], key)


def test_refill_memory_and_cpu(bench: tuple[dict[str, Any], Path, str]) -> None:
    results = bench[0]
    refill = results["refill"]
    _positive_summary(refill["fresh_import_ms"], "fresh_import_ms")
    _positive_summary(refill["spawn_ready_ms"], "spawn_ready_ms")
    _positive_summary(refill["cpu_ms_per_bot"], "cpu_ms_per_bot")
    _positive(refill["ratio_to_fresh_import"], "ratio_to_fresh_import")
    idle = results["idle_bot"]
    assert idle["bots"] >= 2
    for key in ("pss_mb", "rss_mb", "uss_mb"):
        _positive_summary(idle[key], key)
    assert idle["pss_mb"]["p50"] <= idle["rss_mb"]["p50"]
    _positive(idle["zygote_rss_mb"], "zygote_rss_mb")
    cpu = results["cpu_per_call"]
    for system in SYSTEMS:
        _positive(cpu[system]["per_call_pct"], f"{system} CPU")
        assert cpu[system]["calls"] == 1 and cpu[system]["pids"] >= 1
    assert cpu["pipecat_runner"]["pids"] == 1  # the runner's one process serves every call
    _positive(cpu["ratio"], "cpu ratio")
    _positive(cpu["ratio_runner"], "cpu ratio to the runner")


def test_overhead_sweep(bench: tuple[dict[str, Any], Path, str]) -> None:
    overhead = bench[0]["overhead"]
    assert overhead["subtracted"]["total_ms"] == pytest.approx(200 + 300 + 100 + 100)
    assert overhead["levels"] and overhead["levels"][0]["calls"] == 1
    level = overhead["levels"][0]
    assert level["failures"] == 0, level["failure_reasons"]
    # The overhead itself may come out negative only if the subtraction were wrong.
    _positive_summary(level["voice_to_voice_ms"], "voice_to_voice_ms")
    assert isinstance(overhead["p50_ms"], int | float)
    # One sample at one call: the p50s are that sample's. The VAD stop subtracted is the one
    # the bot measured on the audio it heard (``vad_silence_ms``), not the configured 200 ms.
    assert level["overhead_ms"]["n"] == 1
    measured = level["bot_turn_p50_ms"]["vad_silence_ms"]
    assert level["vad_stop_ms"]["p50"] == pytest.approx(measured, abs=0.1)
    assert 180 < measured < 400
    after_vad = overhead["subtracted"]["total_ms"] - overhead["subtracted"]["vad_stop_ms"]
    assert overhead["p50_ms"] == pytest.approx(
        level["voice_to_voice_ms"]["p50"] - measured - after_vad, abs=0.2
    )
    assert level["overhead_configured_vad_ms"]["p50"] == pytest.approx(
        level["voice_to_voice_ms"]["p50"] - overhead["subtracted"]["total_ms"], abs=0.1
    )
    assert "audio_out_ms" in level["bot_turn_p50_ms"]
    assert "… VAD stop subtracted, p50: measured in the bot (runner: voicebots'" in bench[2]
    assert isinstance(overhead["max_calls_p95_under_limit"], int)
    assert isinstance(overhead["max_calls_p95_within_limit_of_1_call"], int)


def test_overhead_sweep_against_the_runner(bench: tuple[dict[str, Any], Path, str]) -> None:
    results = bench[0]
    ours, theirs = results["overhead"], results["overhead_runner"]
    assert theirs["subtracted"] == ours["subtracted"]
    assert theirs["levels"] and theirs["levels"][0]["calls"] == 1
    level = theirs["levels"][0]
    assert level["failures"] == 0, level["failure_reasons"]
    _positive_summary(level["voice_to_voice_ms"], "runner voice_to_voice_ms")
    assert isinstance(theirs["p50_ms"], int | float)
    # The runner keeps no session record: no turn report, and the VAD stop charged is the
    # one voicebots' bots measured on the same utterance.
    assert level["bot_turn_p50_ms"] == {} and level["overhead_split_p50_ms"] == {}
    measured = ours["levels"][0]["vad_stop_ms"]["p50"]
    assert theirs["vad_stop_fallback_ms"] == pytest.approx(measured, abs=0.1)
    assert level["vad_stop_ms"]["p50"] == pytest.approx(measured, abs=0.1)
    concurrency = results["concurrency"]
    assert concurrency["voicebots"] == ours["max_calls_p95_under_limit"]
    assert concurrency["pipecat_runner"] == theirs["max_calls_p95_under_limit"]
    assert isinstance(concurrency["pipecat_runner"], int)


def test_report_outputs(bench: tuple[dict[str, Any], Path, str]) -> None:
    results, out, output = bench
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {t["name"] for t in results["targets"]} >= {
        "ttfw_p50_ratio_runner_burst_1",
        "ttfw_p50_ratio_runner_burst_2",
        "offer_answer_p50_ratio_runner_burst_2",
        "concurrent_calls_ratio_runner",
        "cpu_per_call_ratio_runner",
        "spawn_ready_ms_p50",
        "idle_bot_pss_mb_p50",
        "cpu_per_call_ratio",
        "overhead_p50_ms",
        "concurrent_calls_p95_under_100ms",
    }
    assert all(isinstance(t["met"], bool) for t in results["targets"])
    machine = results["machine"]
    assert machine["nproc"] >= 1 and machine["cpu_model"] and machine["date"]
    assert "| offer→answer p50 / p99, burst of 1" in output  # the table went to stdout
    assert "| time to first word p50, 2 at once" in output
    assert "| metric | voicebots | pipecat runner | bare aiortc |" in output
    assert (results["machine"]["nproc"], results["schema"]) >= (1, 2)
    assert "overhead" in output and "[" in output  # progress went to stderr


def test_statistics_and_cleaning() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
    assert summarize([]).n == 0
    assert clean({"a": math.nan, "b": [1.234, math.inf]}) == {"a": None, "b": [1.23, None]}
    subtracted = Subtracted.of(
        vad_stop_secs=0.2,
        turn_stop_secs=0.3,
        transcription_delay=0.5,  # longer than the turn timer: the transcript is what is waited
        first_token_delay=0.1,
        speech_first_byte_delay=0.05,
    )
    assert subtracted.turn_wait == 0.5
    assert subtracted.total == pytest.approx(0.2 + 0.5 + 0.1 + 0.05)


def test_table_renders_missing_values() -> None:
    nan = summarize([]).to_json()
    results: dict[str, Any] = {
        "machine": {"nproc": 2, "cpu_model": "cpu", "python": "3.11", "date": "today"},
        "offer_answer": {
            "bursts": [
                {
                    "size": 16,
                    "voicebots": nan,
                    "bare_aiortc": nan,
                    "ratio_p50": math.nan,
                    "ratio_p99": math.nan,
                }
            ]
        },
        "refill": {
            "fresh_import_ms": nan,
            "spawn_ready_ms": nan,
            "ratio_to_fresh_import": math.nan,
            "cpu_ms_per_bot": nan,
            "by_burst": [],
        },
        "idle_bot": {"bots": 0, "pss_mb": nan, "rss_mb": nan, "uss_mb": nan},
        "cpu_per_call": {
            "voicebots": {"calls": 1, "window_s": 1.0, "per_call_pct": math.nan},
            "bare_aiortc": {"per_call_pct": math.nan},
            "ratio": math.nan,
        },
        "overhead": {
            "p50_ms": math.nan,
            "p95_ms": math.nan,
            "limit_ms": 100.0,
            "max_calls_p95_under_limit": 0,
            "max_calls_p95_within_limit_of_1_call": 0,
            "levels": [],
        },
    }
    results["targets"] = targets(results)
    assert not any(t["met"] for t in results["targets"])
    text = table(results)
    assert "| offer→answer p50 / p99, burst of 16 (n=0) | - / - | - | - / - |" in text
    # The runner's figures, absent here (an older results file), render as missing.
    assert "| concurrent calls with overhead p95 < 100 ms | 0 | - |" in text
