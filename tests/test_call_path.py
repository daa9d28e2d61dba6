"""The core call path over real sockets and processes.

signaling and spawner run as processes, Redis is a real redis-server, the caller is an aiortc
peer playing a speech fixture, and cloud providers are a fake OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from rq import Queue

from benchmarks.caller import CallOptions, CallResult, run_call
from benchmarks.harness import Redis, System, run_fake_openai_process, run_system, run_worker_burst
from common.record import QUEUE_NAME
from tests import FIXTURES

SPEECH = FIXTURES / "hello.wav"
FAKE_TRANSCRIPT = "what is the weather like today"
FAKE_REPLY = "It is sunny and warm today."


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with run_fake_openai_process("--transcript", FAKE_TRANSCRIPT, "--reply", FAKE_REPLY) as url:
        yield url


def _call(system: System, **overrides: Any) -> CallResult:
    options = CallOptions(url=system.url, wav=SPEECH, max_seconds=25.0, **overrides)
    return asyncio.run(run_call(options))


def _record(redis_server: Redis, session_id: str) -> dict[str, str]:
    return redis_server.record(session_id)


def _roles(record: dict[str, str]) -> list[tuple[str, str]]:
    return [(line["role"], line["text"]) for line in json.loads(record["transcript"])]


def _assert_finished(record: dict[str, str]) -> None:
    assert record["status"] == "completed", record
    assert record["end_reason"] == "hangup"
    assert float(record["started_at"]) <= float(record["ended_at"])
    stamps = [line["ts"] for line in json.loads(record["transcript"])]
    assert stamps == sorted(stamps)


def test_call_with_openai_compatible_providers(redis_server: Redis, openai_url: str) -> None:
    env = {"OPENAI_BASE_URL": openai_url, "OPENAI_API_KEY": "sk-test", "VOICEBOTS_GREETING": ""}
    with run_system(redis_server, env) as system:
        result = _call(system)
        seen = httpx.get(openai_url.removesuffix("/v1") + "/_fake/requests").json()

    assert result.voiced_s > 0.5, "the caller heard no bot audio"
    record = _record(redis_server, result.session_id)
    _assert_finished(record)
    lines = _roles(record)
    # The fixture may reach STT as more than one VAD segment, each "transcribed" by the fake.
    user = next(i for i, (role, text) in enumerate(lines) if role == "user")
    assert FAKE_TRANSCRIPT in lines[user][1]
    assert ("assistant", FAKE_REPLY) in lines[user + 1 :]
    # Every stage went through the OpenAI protocol, not a local stand-in.
    assert seen["transcriptions"] >= 1
    assert any(FAKE_TRANSCRIPT in json.dumps(m) for m in seen["chat_messages"])
    assert FAKE_REPLY in " ".join(seen["speech_inputs"])

    queue = Queue(QUEUE_NAME, connection=redis_server.client())
    assert queue.count == 1
    worker = run_worker_burst({**system.env})
    assert worker.returncode == 0, worker.stderr
    summary = _record(redis_server, result.session_id).get("summary", "")
    assert summary, "the post-call job left no summary"


def test_call_with_offline_providers(redis_server: Redis) -> None:
    with run_system(redis_server) as system:
        assert "offline" in system.log("spawner")
        result = _call(system)

    assert result.voiced_s > 1.0
    record = _record(redis_server, result.session_id)
    _assert_finished(record)
    lines = _roles(record)
    roles = [role for role, _ in lines]
    # Greeting, then the caller's words recognised by pocketsphinx, then the scripted echo.
    assert roles[0] == "assistant" and "user" in roles
    # pocketsphinx may hear the fixture as one turn or two ("hello" / the question).
    first_user = roles.index("user")
    assert "hello" in " ".join(t for r, t in lines if r == "user").lower()
    echoes = [t for r, t in lines[first_user:] if r == "assistant"]
    assert any(t.startswith("You said:") for t in echoes), lines
    worker = run_worker_burst({**system.env})
    assert worker.returncode == 0, worker.stderr
    assert _record(redis_server, result.session_id)["summary"]


def test_two_calls_get_two_bots(redis_server: Redis) -> None:
    async def both(system: System) -> list[CallResult]:
        options = CallOptions(url=system.url, wav=SPEECH, max_seconds=25.0)
        async with asyncio.TaskGroup() as tasks:  # one failing hangs the other up
            calls = [tasks.create_task(run_call(options)) for _ in range(2)]
        return [call.result() for call in calls]

    with run_system(redis_server, {"VOICEBOTS_GREETING": ""}, min_idle=2) as system:
        first, second = asyncio.run(both(system))

    records = [_record(redis_server, r.session_id) for r in (first, second)]
    assert first.session_id != second.session_id
    assert records[0]["bot_pid"] != records[1]["bot_pid"]
    for record in records:
        _assert_finished(record)
        assert {"user", "assistant"} <= {role for role, _ in _roles(record)}
