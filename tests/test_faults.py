"""Faults survived, over real processes: whatever happens, every call leaves its record.

Each test runs the spawner and signaling as processes against a private Redis, places calls
with the headless caller, injects one fault, and checks the Redis record, the pool and any
concurrent call. Calls run in a task group inside the system's lifetime, so a failing check
still hangs them up (and closes their peers) before the system stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq import Queue

from benchmarks.caller import CallOptions, CallResult, run_call
from benchmarks.harness import Redis, System, run_redis, run_system
from common.record import QUEUE_NAME
from spawner.config import HEARTBEAT_TIMEOUT
from tests import FIXTURES, ROOT

SPEECH = FIXTURES / "hello.wav"


def _record(redis_server: Redis, session_id: str) -> dict[str, Any]:
    return dict(redis_server.record(session_id))


def _live_call(system: System, timeout: float = 20) -> dict[str, Any]:
    """The first live call that has connected and has at least one transcript line."""
    found: dict[str, Any] = {}

    def check() -> bool:
        for call in system.status()["calls"]:
            if call["connected"] and call["lines"] > 0:
                found.update(call)
                return True
        return False

    system.wait_until(check, timeout, "a connected call with a transcript line")
    return found


def _wait_record(redis_server: Redis, session_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = _record(redis_server, session_id)
        if record.get("status") in ("completed", "failed"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"no final record for {session_id} within {timeout} s")


def _job_queued(system: System, redis_server: Redis) -> None:
    """The record's post-call job is in the queue: the spawner enqueues it just after it
    writes the record, so a record seen may not have its job yet."""
    queue = Queue(QUEUE_NAME, connection=redis_server.client())
    system.wait_until(lambda: queue.count == 1, 10, "one post-call job in the queue")


def _pool_refilled(system: System, idle: int) -> None:
    system.wait_until(lambda: system.status()["pool"]["idle"] >= idle, 30, "pool refill")


def _options(system: System, **overrides: Any) -> CallOptions:
    values: dict[str, Any] = {"url": system.url, "wav": SPEECH, "max_seconds": 20.0}
    values.update(overrides)
    return CallOptions(**values)


async def test_sigkill_mid_call_keeps_the_transcript(redis_server: Redis) -> None:
    with run_system(redis_server, min_idle=2, max_bots=4) as system:
        async with asyncio.TaskGroup() as tasks:
            victim = tasks.create_task(run_call(_options(system, max_seconds=8.0)))
            bystander = tasks.create_task(run_call(_options(system, lead_silence=1.0)))
            live = await asyncio.to_thread(_live_call, system)
            os.kill(live["bot_pid"], signal.SIGKILL)
            # Within 2 s the record holds what was said so far.
            record = await asyncio.to_thread(_wait_record, redis_server, live["session_id"], 2.0)
            survivor: CallResult = await bystander
            await victim
            await asyncio.to_thread(_pool_refilled, system, 2)

    assert record["status"] == "failed"
    assert record["end_reason"] == "bot_crashed: killed by SIGKILL"
    assert json.loads(record["transcript"]), "the lines said before the crash were lost"
    other = survivor if survivor.session_id != live["session_id"] else None
    if other is not None:  # the bystander was not the one killed
        final = _record(redis_server, other.session_id)
        assert final["status"] == "completed"
        assert {"user", "assistant"} <= {line["role"] for line in json.loads(final["transcript"])}


async def test_memory_hog_is_killed_by_its_cgroup(redis_server: Redis) -> None:
    env = {"VOICEBOTS_FAULTS": "1", "VOICEBOTS_BOT_MEMORY_MB": "300"}
    with run_system(redis_server, env, min_idle=1, max_bots=2) as system:
        limits = system.status()["pool"]["limits"]
        if not limits["enforcement"].startswith("cgroup"):
            pytest.fail(f"this host should allow per-bot cgroups, got {limits}")
        body = {"voicebots_fault": "memory", "after": 1.0}
        result = await run_call(_options(system, body=body, max_seconds=15.0))
        record = await asyncio.to_thread(_wait_record, redis_server, result.session_id, 10)
        await asyncio.to_thread(_pool_refilled, system, 1)
        log = system.log("spawner")

    assert record["status"] == "failed"
    assert record["end_reason"] == "bot_crashed: out of memory"
    assert "cgroup-v" in log  # the start-up line says which enforcement is active


async def test_hung_bot_is_killed_and_replaced(redis_server: Redis) -> None:
    with run_system(redis_server, {"VOICEBOTS_FAULTS": "1"}, min_idle=1, max_bots=2) as system:
        body = {"voicebots_fault": "hang", "after": 1.0}
        # The caller stays past the pool's heartbeat timeout, which finds the bot hung.
        caller_stays = HEARTBEAT_TIMEOUT + 8.0
        result = await run_call(_options(system, body=body, max_seconds=caller_stays))
        record = await asyncio.to_thread(_wait_record, redis_server, result.session_id, 10)
        await asyncio.to_thread(_pool_refilled, system, 1)

    assert record["status"] == "failed"
    assert record["end_reason"] == "bot_hung"


async def test_records_wait_in_the_spool_while_redis_is_down() -> None:
    with run_redis() as store:
        with run_system(store, min_idle=1, max_bots=2) as system:
            # 1. Redis dies mid-call, comes back: the record is delivered by the same spawner.
            async with asyncio.TaskGroup() as tasks:
                call = tasks.create_task(run_call(_options(system, max_seconds=10.0)))
                live = await asyncio.to_thread(_live_call, system)
                store.stop()
                await call
                spool = Path(system.env["VOICEBOTS_SPOOL_DIR"]) / "pending"
                assert [p.stem for p in spool.glob("*.json")] == [live["session_id"]]
                with run_redis(port=store.port) as again:
                    first = await asyncio.to_thread(_wait_record, again, live["session_id"], 10)
                    await asyncio.to_thread(_job_queued, system, again)

                    # 2. Redis dies again; this time the spawner restarts before Redis is back.
                    call = tasks.create_task(run_call(_options(system, max_seconds=10.0)))
                    second_live = await asyncio.to_thread(_live_call, system)
                    again.stop()
                    await call
                    assert system.stop("spawner") == 0
                with run_redis(port=store.port) as third:
                    system.env["REDIS_URL"] = third.url
                    await asyncio.to_thread(system.start, "spawner")
                    second = await asyncio.to_thread(
                        _wait_record, third, second_live["session_id"], 10
                    )
                    await asyncio.to_thread(_job_queued, system, third)
                    # The spooled record's file goes once record and job are both written.
                    system.wait_until(lambda: not list(spool.glob("*.json")), 10, "empty spool")

    assert first["status"] == "completed" and json.loads(first["transcript"])
    assert second["status"] == "completed" and json.loads(second["transcript"])


async def test_sigterm_drains_then_exits(redis_server: Redis) -> None:
    with run_system(redis_server, {"VOICEBOTS_DRAIN_TIMEOUT": "60"}, min_idle=1) as system:
        async with asyncio.TaskGroup() as tasks:
            call = tasks.create_task(run_call(_options(system, lead_silence=1.0)))
            live = await asyncio.to_thread(_live_call, system)
            system.processes["spawner"].send_signal(signal.SIGTERM)
            async with httpx.AsyncClient(base_url=system.url) as client:
                await asyncio.sleep(0.5)
                ready = await client.get("/readyz")
                started = await client.post("/start", json={})
            result = await call  # the live call goes on to its natural end
            code = await asyncio.to_thread(system.processes["spawner"].wait, 30)

    assert ready.status_code == 503 and ready.json()["status"] == "draining"
    assert started.status_code == 503 and started.headers["Retry-After"]
    assert result.session_id == live["session_id"]
    record = _record(redis_server, live["session_id"])
    assert record["status"] == "completed" and record["end_reason"] == "hangup"
    assert code == 0


async def test_second_sigterm_ends_calls_but_flushes(redis_server: Redis) -> None:
    with run_system(redis_server, {"VOICEBOTS_DRAIN_TIMEOUT": "60"}, min_idle=1) as system:
        async with asyncio.TaskGroup() as tasks:
            call = tasks.create_task(run_call(_options(system, max_seconds=15.0)))
            live = await asyncio.to_thread(_live_call, system)
            spawner = system.processes["spawner"]
            spawner.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            spawner.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(spawner.wait, 30)
            await call

    record = _record(redis_server, live["session_id"])
    assert code == 0
    assert record["end_reason"] == "shutdown"
    assert json.loads(record["transcript"])


async def test_signaling_restart_does_not_drop_the_call(redis_server: Redis) -> None:
    with run_system(redis_server, min_idle=1) as system:
        async with asyncio.TaskGroup() as tasks:
            call = tasks.create_task(run_call(_options(system, lead_silence=2.0)))
            live = await asyncio.to_thread(_live_call, system)
            system.stop("signaling")
            await asyncio.to_thread(system.start, "signaling")
            result = await call

    assert result.session_id == live["session_id"]
    record = _record(redis_server, live["session_id"])
    assert record["status"] == "completed" and record["end_reason"] == "hangup"
    assert {"user", "assistant"} <= {line["role"] for line in json.loads(record["transcript"])}


async def test_vanished_client_and_overlong_call_free_their_bots(redis_server: Redis) -> None:
    env = {"VOICEBOTS_IDLE_TIMEOUT": "2", "VOICEBOTS_MAX_CALL_SECONDS": "4"}
    with run_system(redis_server, env, min_idle=1, max_bots=2) as system:
        # A caller process killed outright: no BYE, no DTLS close, just silence.
        caller = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "voicebots", "call", system.url, "--wav", str(SPEECH)),
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        vanished = await asyncio.to_thread(_live_call, system)
        caller.kill()
        await caller.wait()
        gone = await asyncio.to_thread(_wait_record, redis_server, vanished["session_id"], 10)
        # A caller that keeps talking past the limit.
        long_call = await run_call(_options(system, max_seconds=12.0, reply_silence=30.0))
        await asyncio.to_thread(_pool_refilled, system, 1)

    assert gone["end_reason"] == "idle_timeout"
    overlong = _record(redis_server, long_call.session_id)
    assert overlong["end_reason"] == "max_duration"


async def test_full_pool_answers_503_at_once_and_recovers(redis_server: Redis) -> None:
    with run_system(redis_server, min_idle=1, max_bots=1) as system:
        async with asyncio.TaskGroup() as tasks:
            busy = tasks.create_task(run_call(_options(system)))
            await asyncio.to_thread(_live_call, system)
            async with httpx.AsyncClient(base_url=system.url) as client:
                session = (await client.post("/start", json={})).json()["sessionId"]
                offer = {"sdp": SPEECH_OFFER, "type": "offer"}
                rejected = await client.post(f"/sessions/{session}/api/offer", json=offer)
                ready = await client.get("/readyz")
            await busy
            await asyncio.to_thread(_pool_refilled, system, 1)
            later = await run_call(_options(system))

    assert rejected.status_code == 503
    assert rejected.json()["error"]["code"] == "no_capacity"
    assert int(rejected.headers["Retry-After"]) >= 1
    assert ready.status_code == 503 and ready.json()["status"] == "full"
    assert _record(redis_server, later.session_id)["status"] == "completed"


#: A syntactically complete audio offer; it never reaches a bot in the test that uses it.
SPEECH_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
    "a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n"
)
