"""The post-call job end to end: a private redis-server, a real burst ``rq worker`` process,
the fake OpenAI server and a webhook receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.fakes.openai_server import run_fake_openai
from benchmarks.fakes.server import bind_socket, serve_asgi
from benchmarks.harness import Redis as RedisServer
from bots.config import WEBHOOK_ATTEMPTS, WEBHOOK_BACKOFF, PostCallConfig
from common.record import QUEUE_NAME, CallRecord, CallStatus, TranscriptLine, call_key
from spawner.postcall import enqueue_postcall, postcall_job_id, run_postcall, verify_signature
from spawner.summary import (
    EMPTY_CALL_SUMMARY,
    SUMMARY_SYSTEM_PROMPT,
    extractive_summary,
    format_transcript,
)
from spawner.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookDeliveryError, sign

ROOT = Path(__file__).resolve().parent.parent
RQ = Path(sys.executable).with_name("rq")
SECRET = "whsec-test-0123456789"
# Goes into the webhook URL to check that it never reaches logs or the call hash.
URL_TOKEN = "url-token-must-not-leak"
T0 = 1_700_000_000.0

TRANSCRIPT = (
    TranscriptLine("assistant", "Hello! I am listening.", T0 + 1),
    TranscriptLine("user", "what is the weather like today", T0 + 4),
    TranscriptLine("assistant", "It is sunny and warm today.", T0 + 6),
    TranscriptLine("user", "should I bring an umbrella for the weather later", T0 + 12),
    TranscriptLine("assistant", "No umbrella needed today.", T0 + 14),
    TranscriptLine("user", "thanks, bye", T0 + 20),
)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    # A private redis-server (conftest): the shared one may hold other ``voicebots`` jobs, and
    # other workers there would steal ours.
    return redis_server.url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        connection.flushdb()
        yield connection


def make_record(client: redis.Redis, **changes: object) -> CallRecord:
    record = CallRecord(
        session_id=f"test-{uuid.uuid4().hex[:12]}",
        status=CallStatus.COMPLETED,
        started_at=T0,
        ended_at=T0 + 42,
        end_reason="hangup",
        transcript=TRANSCRIPT,
    )
    record = replace(record, **changes)  # type: ignore[arg-type]
    # redis-py's Mapping key type is invariant; Any lets the str-keyed hash through.
    fields: Mapping[Any, str] = record.to_hash()
    client.hset(call_key(record.session_id), mapping=fields)
    return record


def stored(client: redis.Redis, session_id: str) -> dict[str, str]:
    raw = client.hgetall(call_key(session_id))
    return {str(k, "utf-8"): str(v, "utf-8") for k, v in raw.items()}  # type: ignore[arg-type]


def worker_env(redis_url: str, settings: dict[str, str]) -> dict[str, str]:
    # Only what the test sets: a developer's own OPENAI_API_KEY must not change the outcome.
    own = ("OPENAI_", "ELEVENLABS_", "VOICEBOTS_", "RQ_", "REDIS_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    return {**env, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, **settings}


async def run_worker(redis_url: str, **settings: str) -> str:
    """Run ``rq worker --burst`` until the queue is empty; returns its output."""
    proc = await asyncio.create_subprocess_exec(
        str(RQ),
        "worker",
        "--burst",
        "--url",
        redis_url,
        QUEUE_NAME,
        cwd=ROOT,
        env=worker_env(redis_url, settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    output = out.decode(errors="replace")
    assert proc.returncode == 0, output
    return output


@dataclass
class Receiver:
    """A webhook endpoint answering ``statuses`` in turn (the last one repeats)."""

    statuses: list[int]
    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)


@asynccontextmanager
async def run_receiver(*statuses: int) -> AsyncIterator[Receiver]:
    receiver = Receiver(list(statuses) or [200])

    async def hook(request: Request) -> Response:
        receiver.arrived.append(time.monotonic())
        receiver.bodies.append(await request.body())
        receiver.headers.append(dict(request.headers))
        answers = receiver.statuses
        return Response(status_code=answers[min(len(receiver.bodies), len(answers)) - 1])

    app = Starlette(routes=[Route("/hooks/calls", hook, methods=["POST"])])
    async with serve_asgi(app) as (host, port):
        receiver.url = f"http://{host}:{port}/hooks/calls?token={URL_TOKEN}"
        yield receiver


def webhook_settings(receiver: Receiver) -> dict[str, str]:
    return {"VOICEBOTS_WEBHOOK_URL": receiver.url, "VOICEBOTS_WEBHOOK_SECRET": SECRET}


def test_extractive_summary_is_deterministic_and_useful() -> None:
    record = CallRecord("s", CallStatus.COMPLETED, T0, T0 + 42, "hangup", TRANSCRIPT)
    assert extractive_summary(record) == (
        'Caller asked: "what is the weather like today". '
        'Assistant answered: "It is sunny and warm today". '
        'Also discussed: "should I bring an umbrella for the weather later". '
        "3 caller turns and 3 assistant turns over 42 s; ended: hangup."
    )
    assert extractive_summary(replace(record, transcript=())) == EMPTY_CALL_SUMMARY
    greeting_only = replace(record, transcript=TRANSCRIPT[:1], end_reason="idle_timeout")
    assert extractive_summary(greeting_only) == (
        'The caller said nothing; the assistant said: "Hello! I am listening". '
        "0 caller turns and 1 assistant turn over 42 s; ended: idle_timeout."
    )


def test_signature_scheme() -> None:
    body = b'{"session_id":"s"}'
    header = sign(SECRET, 1700000000, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, "1700000000", body, header)
    assert verify_signature(SECRET, 1700000000, body.decode(), header)
    assert not verify_signature(SECRET, 1700000001, body, header)
    assert not verify_signature("other-secret", 1700000000, body, header)
    assert not verify_signature("", 1700000000, body, header)
    assert not verify_signature(SECRET, "not-a-number", body, header)
    assert verify_signature(SECRET, 1700000000, body, header, max_age=300, now=1700000100)
    assert not verify_signature(SECRET, 1700000000, body, header, max_age=300, now=1700000400)


async def test_offline_summary_written(redis_url: str, client: redis.Redis) -> None:
    record = make_record(client)
    assert enqueue_postcall(client, record.session_id)
    await run_worker(redis_url)
    fields = stored(client, record.session_id)
    assert fields["summary"] == extractive_summary(record)
    assert fields["summary_source"] == "offline"
    assert "webhook_status" not in fields
    job = Job.fetch(postcall_job_id(record.session_id), connection=client)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == {"session_id": record.session_id, "summary_source": "offline"}


async def test_openai_summary_through_fake(redis_url: str, client: redis.Redis) -> None:
    record = make_record(client)
    settings = {
        "OPENAI_BASE_URL": "",
        "OPENAI_API_KEY": "sk-fake-key",
        "VOICEBOTS_LLM": "openai:gpt-test-mini",
    }
    async with run_fake_openai(api_key="sk-fake-key") as fake:
        settings["OPENAI_BASE_URL"] = fake.base_url
        enqueue_postcall(client, record.session_id)
        output = await run_worker(redis_url, **settings)
        fields = stored(client, record.session_id)
        assert fields["summary"] == 'Summary: the caller said "what is the weather like today".'
        assert fields["summary_source"] == "openai"
        (request,) = fake.chat_requests
        assert request["model"] == "gpt-test-mini"
        assert request["messages"] == [
            {"role": "system", "content": SUMMARY_SYSTEM_PROMPT},
            {"role": "user", "content": format_transcript(TRANSCRIPT)},
        ]
        assert "sk-fake-key" not in output

        # A retried job keeps the stored summary instead of asking the LLM again.
        config = PostCallConfig.from_env(worker_env(redis_url, settings))
        result = await asyncio.to_thread(run_postcall, config, client, record.session_id)
        assert result == {"session_id": record.session_id, "summary_source": "openai"}
        assert fake.requests["/v1/chat/completions"] == 1


async def test_llm_failure_falls_back_to_offline_summary(client: redis.Redis) -> None:
    record = make_record(client)
    async with run_fake_openai(api_key="sk-expected") as fake:
        env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "sk-wrong"}
        config = PostCallConfig.from_env(env)
        result = await asyncio.to_thread(run_postcall, config, client, record.session_id)
    assert result["summary_source"] == "offline-fallback"
    assert stored(client, record.session_id)["summary"] == extractive_summary(record)


async def test_webhook_signed_delivery(redis_url: str, client: redis.Redis) -> None:
    record = make_record(client)
    async with run_receiver(200) as receiver:
        enqueue_postcall(client, record.session_id)
        output = await run_worker(redis_url, **webhook_settings(receiver))
    (body,) = receiver.bodies
    (headers,) = receiver.headers
    timestamp = headers[TIMESTAMP_HEADER.lower()]
    signature = headers[SIGNATURE_HEADER.lower()]
    assert headers["content-type"] == "application/json"
    assert abs(int(timestamp) - time.time()) < 60
    assert verify_signature(SECRET, timestamp, body, signature, max_age=300)
    tampered = body.replace(b"sunny", b"rainy")
    assert tampered != body
    assert not verify_signature(SECRET, timestamp, tampered, signature)
    assert not verify_signature(SECRET, str(int(timestamp) + 1), body, signature)
    assert not verify_signature("wrong-secret", timestamp, body, signature)

    payload = json.loads(body)
    assert payload == replace(record, summary=extractive_summary(record)).to_json()
    fields = stored(client, record.session_id)
    assert fields["webhook_status"] == "delivered"
    assert fields["webhook_attempts"] == "1"
    assert SECRET not in output and URL_TOKEN not in output


async def test_webhook_retried_after_server_errors(redis_url: str, client: redis.Redis) -> None:
    record = make_record(client)
    async with run_receiver(500, 500, 200) as receiver:
        enqueue_postcall(client, record.session_id)
        await run_worker(redis_url, **webhook_settings(receiver))
    assert len(receiver.bodies) == 3
    assert len(set(receiver.bodies)) == 1
    # Backoff doubles: 1 s, then 2 s.
    first, second, third = receiver.arrived
    first_gap, second_gap = second - first, third - second
    assert first_gap >= WEBHOOK_BACKOFF and second_gap >= 2 * WEBHOOK_BACKOFF
    for body, headers in zip(receiver.bodies, receiver.headers, strict=True):
        timestamp = headers[TIMESTAMP_HEADER.lower()]
        assert verify_signature(SECRET, timestamp, body, headers[SIGNATURE_HEADER.lower()])
    fields = stored(client, record.session_id)
    assert fields["webhook_status"] == "delivered"
    assert fields["webhook_attempts"] == "3"
    job = Job.fetch(postcall_job_id(record.session_id), connection=client)
    assert job.get_status() == JobStatus.FINISHED


async def test_webhook_permanent_failure_fails_the_job(redis_url: str, client: redis.Redis) -> None:
    record = make_record(client)
    async with run_receiver(503) as receiver:
        enqueue_postcall(client, record.session_id)
        output = await run_worker(redis_url, **webhook_settings(receiver))
    assert len(receiver.bodies) == WEBHOOK_ATTEMPTS
    fields = stored(client, record.session_id)
    assert fields["webhook_status"] == "failed"
    assert fields["webhook_attempts"] == str(WEBHOOK_ATTEMPTS)
    assert "HTTP 503" in fields["webhook_error"]
    assert fields["summary"] == extractive_summary(record)  # the summary survives
    job = Job.fetch(postcall_job_id(record.session_id), connection=client)
    assert job.get_status() == JobStatus.FAILED
    result = job.latest_result()
    assert result is not None and "WebhookDeliveryError" in (result.exc_string or "")
    for text in (output, fields["webhook_error"], result.exc_string or ""):
        assert URL_TOKEN not in text and SECRET not in text


async def test_webhook_client_error_is_not_retried(redis_url: str, client: redis.Redis) -> None:
    record = make_record(client)
    async with run_receiver(400) as receiver:
        enqueue_postcall(client, record.session_id)
        await run_worker(redis_url, **webhook_settings(receiver))
    assert len(receiver.bodies) == 1
    fields = stored(client, record.session_id)
    assert (fields["webhook_status"], fields["webhook_attempts"]) == ("failed", "1")
    job = Job.fetch(postcall_job_id(record.session_id), connection=client)
    assert job.get_status() == JobStatus.FAILED


async def test_webhook_connection_refused_is_retried(client: redis.Redis) -> None:
    record = make_record(client)
    with bind_socket() as sock:  # bound but never listening: connections are refused
        host, port = sock.getsockname()[:2]
        settings = {
            "VOICEBOTS_WEBHOOK_URL": f"http://{host}:{port}/hook",
            "VOICEBOTS_WEBHOOK_SECRET": SECRET,
        }
        config = replace(
            PostCallConfig.from_env(settings), webhook_attempts=2, webhook_backoff=0.01
        )
        with pytest.raises(WebhookDeliveryError, match="after 2 tries: ConnectError") as error:
            await asyncio.to_thread(run_postcall, config, client, record.session_id)
    assert error.value.attempts == 2 and error.value.http_status is None
    fields = stored(client, record.session_id)
    assert (fields["webhook_status"], fields["webhook_attempts"]) == ("failed", "2")


async def test_delivered_webhook_is_not_sent_again(client: redis.Redis) -> None:
    record = make_record(client)
    async with run_receiver(200) as receiver:
        config = PostCallConfig.from_env(webhook_settings(receiver))
        for _ in range(2):
            await asyncio.to_thread(run_postcall, config, client, record.session_id)
    assert len(receiver.bodies) == 1


async def test_enqueue_twice_makes_one_job(redis_url: str, client: redis.Redis) -> None:
    record = make_record(client)
    assert enqueue_postcall(client, record.session_id) is True
    assert enqueue_postcall(client, record.session_id) is False
    queue = Queue(QUEUE_NAME, connection=client)
    assert queue.job_ids == [postcall_job_id(record.session_id)]
    await run_worker(redis_url)
    # The finished job is kept for RESULT_TTL, and still blocks a second enqueue.
    assert enqueue_postcall(client, record.session_id) is False
    assert queue.count == 0


def test_job_id_is_stable_and_valid_for_any_session_id() -> None:
    assert postcall_job_id("abc_DEF-123") == "postcall-abc_DEF-123"
    odd = postcall_job_id("call:42/é")
    assert odd == postcall_job_id("call:42/é") and odd.startswith("postcall-")
    assert all(c.isalnum() or c in "-_" for c in odd)


async def test_unknown_call_raises(client: redis.Redis) -> None:
    with pytest.raises(LookupError, match="no call record"):
        await asyncio.to_thread(run_postcall, PostCallConfig(), client, "missing")
