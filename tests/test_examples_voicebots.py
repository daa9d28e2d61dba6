"""The example bot files run unchanged on voicebots.

Each example is named as the bot file (``VOICEBOTS_BOT=examples/<file>.py``, what
``voicebots up --bot examples/<file>.py`` does) of a real system: the spawner and its warm pool
of forked bots, signaling and a private redis-server, all processes. The examples' OpenAI
services point at the fake OpenAI server (a process of its own per configuration), and the
project's headless caller places a real WebRTC call, speaking a fixture.

Beyond what ``tests/test_examples_runner.py`` proves on pipecat's runner, voicebots must record
each call from a pipeline it never built: both roles in order, the bot's lines being what it
actually said (a tool's result included), then summarize it in the post-call job.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.caller import CallOptions, CallResult, run_call
from benchmarks.harness import Redis, System, run_fake_openai_process, run_system, run_worker_burst
from media.audio import is_silent
from tests import FIXTURES, ROOT

EXAMPLES = ROOT / "examples"
SPEECH = FIXTURES / "hello.wav"
#: What the fake "hears", whatever the fixture says: a request for a table.
BOOKING_TRANSCRIPT = "I would like to book a table for two at seven"
BOOKING_ARGS = {"name": "Ann", "party_size": 2, "time": "seven tonight"}
TOOL_CALL = ("book_table", json.dumps(BOOKING_ARGS))
#: The fake's default transcript is a weather question; this is its answer.
WEATHER_REPLY = "It is sunny and warm today."


@pytest.fixture(scope="module")
def booking_openai_url() -> Iterator[str]:
    """The fake OpenAI server answering a booking request with a ``book_table`` call."""
    args = ("--transcript", BOOKING_TRANSCRIPT, "--tool-call", *TOOL_CALL)
    with run_fake_openai_process(*args) as url:
        yield url


@pytest.fixture(scope="module")
def plain_openai_url() -> Iterator[str]:
    """The fake OpenAI server with its defaults (a weather question, answered)."""
    with run_fake_openai_process() as url:
        yield url


def _openai_env(openai_url: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": openai_url, "OPENAI_API_KEY": "sk-test"}


def _bot(name: str) -> dict[str, str]:
    return {"VOICEBOTS_BOT": str(EXAMPLES / name)}


def _call(system: System, max_seconds: float = 30.0, wav: Path = SPEECH) -> CallResult:
    # The lead silence lets the bot's greeting (an LLM run on connect) finish before the
    # caller speaks, as on pipecat's runner.
    options = CallOptions(url=system.url, wav=wav, lead_silence=3.0, max_seconds=max_seconds)
    return asyncio.run(run_call(options))


def _report(openai_url: str) -> dict[str, Any]:
    report: dict[str, Any] = httpx.get(
        openai_url.removesuffix("/v1") + "/_fake/requests", timeout=5
    ).json()
    return report


def _assert_clean_log(spawner_log: str) -> None:
    """No process logged an error or a traceback, and the example no warning of Python's
    (a deprecated pipecat API, say), which a bot's stderr carries into the spawner's log."""
    bad = [
        line
        for line in spawner_log.splitlines()
        if '"level": "ERROR"' in line
        or "Traceback (most recent call last)" in line
        or (str(EXAMPLES) in line and "Warning" in line)
    ]
    assert not bad, "\n".join(bad)


def _lines(record: dict[str, str]) -> list[tuple[str, str]]:
    return [(line["role"], line["text"]) for line in json.loads(record["transcript"])]


def _assert_heard_a_reply(result: CallResult) -> None:
    # "reply": the bot spoke after the caller's speech ended, then went quiet.
    assert result.end_reason == "reply", result.end_reason
    assert result.voiced_s > 0.5, "the caller heard (almost) no bot audio"
    assert not is_silent(result.bot_audio)


def _assert_completed(record: dict[str, str]) -> list[tuple[str, str]]:
    """The record of a call the caller hung up, with both roles; returns its lines."""
    assert record.get("status") == "completed", record
    assert record["end_reason"] == "hangup", record
    stamps = [line["ts"] for line in json.loads(record["transcript"])]
    assert stamps == sorted(stamps)
    lines = _lines(record)
    roles = [role for role, _ in lines]
    # The greeting (said before the caller spoke), the caller's words, then a reply.
    assert roles and roles[0] == "assistant", lines
    assert "user" in roles, lines
    assert "assistant" in roles[roles.index("user") + 1 :], lines
    return lines


def test_table_booking_runs_on_voicebots(redis_server: Redis, booking_openai_url: str) -> None:
    env = {**_openai_env(booking_openai_url), **_bot("table_booking.py")}
    with run_system(redis_server, env, min_idle=1) as system:
        assert "table_booking.py" in system.log("spawner")
        result = _call(system)
        spawner_log = system.log("spawner")
    report = _report(booking_openai_url)

    _assert_heard_a_reply(result)
    record = redis_server.record(result.session_id)
    lines = _assert_completed(record)
    user = [text for role, text in lines if role == "user"]
    assert BOOKING_TRANSCRIPT in " ".join(user), lines

    # The round trip: the LLM asked for the function with the fake's arguments...
    assert report["tool_calls"] >= 1, report
    conversations = report["chat_messages"]
    asked = [
        call["function"]
        for messages in conversations
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("tool_calls") or []
    ]
    assert {"name": TOOL_CALL[0], "arguments": TOOL_CALL[1]} in asked, conversations
    # ...the example's function ran in the bot and its result went back as a tool message...
    results = [
        json.loads(messages[-1]["content"])
        for messages in conversations
        if messages[-1]["role"] == "tool"
    ]
    assert results, f"no chat request ended with the tool's result: {conversations}"
    codes = set()
    for booking in results:
        assert {k: booking[k] for k in BOOKING_ARGS} == BOOKING_ARGS
        assert len(booking["confirmation"]) == 6
        codes.add(booking["confirmation"])
    # ...the LLM's answer quoting the confirmation code was spoken...
    spoken = " ".join(report["speech_inputs"])
    assert any(code in spoken for code in codes), spoken
    # ...and the record holds it, as what the bot said after the caller's request.
    first_user = next(i for i, (role, _) in enumerate(lines) if role == "user")
    said = " ".join(text for role, text in lines[first_user:] if role == "assistant")
    assert any(code in said for code in codes), lines
    # The function's own log line, logged in the bot during the call, is in the record.
    logs = [line.get("message", "") for line in json.loads(record["logs"])]
    assert any(m.startswith("Booked a table for 2") for m in logs), logs
    _assert_clean_log(spawner_log)

    # The post-call job summarizes the call (with the fake, the LLM the system is set up with).
    worker = run_worker_burst({**system.env})
    assert worker.returncode == 0, worker.stderr
    assert redis_server.record(result.session_id).get("summary"), "no summary"


def test_smart_turn_runs_on_voicebots(redis_server: Redis, plain_openai_url: str) -> None:
    env = {**_openai_env(plain_openai_url), **_bot("smart_turn.py")}
    # At DEBUG the bot logs pipecat's loading of the Smart Turn model.
    env["VOICEBOTS_LOG_LEVEL"] = "DEBUG"
    with run_system(redis_server, env, min_idle=1) as system:
        # Smart Turn may judge the fixture's end unfinished and wait for its own fallback
        # before the turn ends: the call gets time for that.
        result = _call(system, max_seconds=45.0)
        spawner_log = system.log("spawner")
    report = _report(plain_openai_url)

    _assert_heard_a_reply(result)
    record = redis_server.record(result.session_id)
    lines = _assert_completed(record)
    # The bundled model loaded in the bot (nothing downloaded: the test has no internet), and
    # the VAD is the example's own (its stop_secs, as the record's turn metrics report it).
    assert "Loaded Local Smart Turn v3" in spawner_log, spawner_log[-4000:]
    turns = json.loads(record["metrics"])["turns"]
    assert turns and turns[0]["vad_wait_ms"] == 200.0, turns
    # The caller's turn ended and was answered: the fake's transcript reached the LLM, and its
    # reply was spoken and recorded.
    assert any("weather" in text for role, text in lines if role == "user"), lines
    assert WEATHER_REPLY in " ".join(report["speech_inputs"]), report["speech_inputs"]
    assert ("assistant", WEATHER_REPLY) in lines, lines
    _assert_clean_log(spawner_log)


def test_builtin_runs_on_voicebots(redis_server: Redis, tmp_path: Path) -> None:
    # One short phrase: the fixture's pause can split it into two turns for pocketsphinx,
    # whose second reply may then start before the caller has finished speaking.
    phrase = tmp_path / "phrase.wav"
    subprocess.run(["espeak-ng", "-w", str(phrase), "Hello, how are you today"], check=True)
    # No OpenAI (or ElevenLabs) settings: every provider of the built-in agent is offline.
    with run_system(redis_server, _bot("builtin.py"), min_idle=1) as system:
        assert "builtin.py" in system.log("spawner")
        result = _call(system, wav=phrase)
        spawner_log = system.log("spawner")

    _assert_heard_a_reply(result)
    record = redis_server.record(result.session_id)
    lines = _assert_completed(record)
    # pocketsphinx hears the fixture (in one turn or two, its words varying: "hello" may come
    # out "fellow"), and the scripted LLM's echo of what it heard is what the bot said.
    heard = " ".join(text.lower() for role, text in lines if role == "user")
    echoes = [t for r, t in lines if r == "assistant" and t.startswith("You said:")]
    assert echoes, lines
    assert any(e.removeprefix("You said:").strip(" .").lower() in heard for e in echoes), lines
    _assert_clean_log(spawner_log)
