"""Traces across processes, Prometheus metrics, and per-turn metrics and logs in the record."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.caller import CallOptions, run_call
from benchmarks.fakes.otlp_receiver import ReceivedSpan, run_otlp_receiver
from benchmarks.harness import Redis, System, run_fake_openai_process, run_system
from tests import FIXTURES

SPEECH = FIXTURES / "hello.wav"


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with run_fake_openai_process() as url:
        yield url


def _scrape(system: System) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{system.url}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _wait_spans(receiver_spans: object, want: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = {span.name for span in receiver_spans()}  # type: ignore[operator]
        if want <= names:
            return
        time.sleep(0.1)


def test_one_trace_per_call_across_processes(redis_server: Redis, openai_url: str) -> None:
    with run_otlp_receiver() as receiver:
        env = {
            "OPENAI_BASE_URL": openai_url,
            "VOICEBOTS_GREETING": "",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with run_system(redis_server, env, min_idle=1) as system:
            result = asyncio.run(run_call(CallOptions(url=system.url, wav=SPEECH)))
            want = {"call", "assign", "turn", "stt", "llm", "tts"}
            _wait_spans(receiver.snapshot, want)
        spans = receiver.snapshot()

    by_id = {span.span_id: span for span in spans}
    offer = next(s for s in spans if s.name == "POST /sessions/{session_id}/api/offer")
    trace_spans = [s for s in spans if s.trace_id == offer.trace_id]
    names = {s.name for s in trace_spans}
    assert {"assign", "call", "conversation", "turn", "stt", "llm", "tts"} <= names, names

    def parent(span: ReceivedSpan) -> ReceivedSpan:
        return by_id[span.parent_id]

    assign = next(s for s in trace_spans if s.name == "assign")
    call = next(s for s in trace_spans if s.name == "call")
    assert (offer.service, assign.service, call.service) == (
        "voicebots-signaling",
        "voicebots-spawner",
        "voicebots-bot",
    )
    assert parent(assign) is offer
    assert parent(call) is assign
    assert call.attributes["voicebots.session_id"] == result.session_id
    conversation = next(s for s in trace_spans if s.name == "conversation")
    assert parent(conversation) is call
    for name in ("stt", "llm", "tts"):
        stage = next(s for s in trace_spans if s.name == name)
        assert parent(stage).name == "turn"
        assert parent(parent(stage)) is conversation
    llm = next(s for s in trace_spans if s.name == "llm")
    assert float(llm.attributes["metrics.ttfb"]) > 0  # type: ignore[arg-type]


def test_metrics_count_a_call(redis_server: Redis) -> None:
    with run_system(redis_server, {"VOICEBOTS_GREETING": ""}, min_idle=1) as system:
        before = _scrape(system)
        asyncio.run(run_call(CallOptions(url=system.url, wav=SPEECH)))
        system.wait_until(lambda: system.status()["pool"]["idle"] >= 1, 30, "refill")
        after = _scrape(system)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("voicebots_calls_ended_total", end_reason="hangup") == 1
    assert delta("voicebots_assignment_seconds_count") == 1
    assert delta("voicebots_spawn_seconds_count") >= 1
    assert delta("voicebots_voice_to_voice_seconds_count") >= 1
    assert after[("voicebots_active_calls", ())] == 0
    assert after[("voicebots_bots", (("state", "idle"),))] >= 1
    assert ("voicebots_accepting", ()) in after


def test_record_keeps_turn_metrics_and_bot_logs(redis_server: Redis) -> None:
    with run_system(redis_server, {"VOICEBOTS_GREETING": ""}, min_idle=1) as system:
        result = asyncio.run(run_call(CallOptions(url=system.url, wav=SPEECH)))
        spawner_log = system.log("spawner")

    record = redis_server.record(result.session_id)
    assert "metrics" in record, (
        result.end_reason,
        record.get("transcript"),
        record.get("logs"),
        spawner_log[-3000:],
    )
    turns = json.loads(record["metrics"])["turns"]
    assert turns, "no turn was measured"
    first = turns[0]
    for milestone in ("stt_ms", "turn_end_ms", "llm_first_ms", "tts_first_ms", "audio_out_ms"):
        assert first[milestone] >= 0, first
    assert first["stt_ms"] <= first["llm_first_ms"] <= first["tts_first_ms"]
    assert first["tts_first_ms"] <= first["audio_out_ms"]
    # The page got the same figures as an RTVI server message.
    assert any(
        m.data.get("type") == "server-message"
        and m.data.get("data", {}).get("type") == "turn-metrics"
        for m in result.messages
    ), [m.data.get("type") for m in result.messages]

    logs = json.loads(record["logs"])
    assert logs and all(line["session_id"] == result.session_id for line in logs)
    assert any(line["message"] == "answered" for line in logs)
    assert all(line["pid"] == int(record["bot_pid"]) for line in logs)
    # Every process logs JSON lines; the spawner's carry the session too.
    json_lines = [json.loads(line) for line in spawner_log.splitlines() if line.startswith("{")]
    assert any(
        line["process"] == "spawner" and line.get("session_id") == result.session_id
        for line in json_lines
    )
