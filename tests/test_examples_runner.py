"""The example bot files run unchanged on pipecat's own development runner.

Each example is started the way its README says, ``python examples/x.py -t webrtc``, as a
process serving pipecat's runner API (``POST /start``, ``POST /sessions/{id}/api/offer``),
with its OpenAI services pointed at the fake OpenAI server (another process). The project's
headless caller then places a real WebRTC call to it, speaking a fixture.

The runner has no ``/api/sessions/{id}`` (voicebots' session API): the caller's ``DELETE`` and
``GET`` there get 404s, which it tolerates, and the call ends by closing the peer connection,
which the bot sees as the client disconnecting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.caller import CallOptions, CallResult, run_call
from benchmarks.harness import free_port, run_fake_openai_process, stop_process
from media.audio import is_silent
from tests import FIXTURES, ROOT

EXAMPLES = ROOT / "examples"
SPEECH = FIXTURES / "hello.wav"
#: What the fake "hears", whatever the fixture says: a request for a table.
BOOKING_TRANSCRIPT = "I would like to book a table for two at seven"
BOOKING_ARGS = {"name": "Ann", "party_size": 2, "time": "seven tonight"}
#: The runner logs at DEBUG; any ERROR line or traceback is a failure of the example.
ERROR_MARKERS = ("| ERROR", "Traceback (most recent call last)")
#: Logged by pipecat's WorkerRunner once the bot's pipeline has ended.
RUNNER_FINISHED = "finished running"


@dataclass
class Example:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _example_env(openai_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICEBOTS_", "OPENAI_", "ELEVENLABS_", "PIPECAT_"))
    }
    env.update(
        {
            "OPENAI_BASE_URL": openai_url,
            "OPENAI_API_KEY": "test",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _wait(check: Any, timeout: float, what: str, example: Example) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if example.process.poll() is not None:
            raise RuntimeError(
                f"{what}: the example exited with {example.process.returncode}\n"
                + example.log[-4000:]
            )
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen in {timeout} s\n{example.log[-4000:]}")


@contextmanager
def _run_example(name: str, openai_url: str, logs: Path) -> Iterator[Example]:
    """``python examples/<name> -t webrtc`` on a free loopback port, until it serves."""
    port = free_port()
    log_path = logs / f"{Path(name).stem}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / name),
                "-t",
                "webrtc",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=_example_env(openai_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    example = Example(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait(
            lambda: (
                httpx.get(f"{example.url}/status", timeout=2).json()["transports"] == ["webrtc"]
            ),
            30,
            "the runner serving",
            example,
        )
        yield example
    finally:
        stop_process(process, 10)


async def _call(example: Example) -> CallResult:
    # The lead silence lets the bot's greeting finish before the caller speaks; were it still
    # playing, the caller's speech would interrupt it, and the call would go on the same way.
    options = CallOptions(url=example.url, wav=SPEECH, lead_silence=3.0, max_seconds=40.0)
    return await run_call(options)


def _report(openai_url: str) -> dict[str, Any]:
    report: dict[str, Any] = httpx.get(
        openai_url.removesuffix("/v1") + "/_fake/requests", timeout=5
    ).json()
    return report


def _assert_heard_a_reply(result: CallResult) -> None:
    # "reply": the bot spoke after the caller's speech ended, then went quiet.
    assert result.end_reason == "reply", result.end_reason
    assert result.voiced_s > 0.5, "the caller heard (almost) no bot audio"
    assert not is_silent(result.bot_audio)


def _assert_clean_end(example: Example) -> None:
    """The caller's hang-up ended the bot's pipeline (on_client_disconnected), and the
    example logged no error on the way."""
    _wait(lambda: RUNNER_FINISHED in example.log, 20, "the bot's pipeline ending", example)
    errors = [line for line in example.log.splitlines() if any(m in line for m in ERROR_MARKERS)]
    assert not errors, "\n".join(errors)


async def test_table_booking_runs_on_pipecats_runner(tmp_path: Path) -> None:
    tool_call = ("book_table", json.dumps(BOOKING_ARGS))
    fake_args = ("--transcript", BOOKING_TRANSCRIPT, "--tool-call", *tool_call)
    with run_fake_openai_process(*fake_args) as openai_url:
        with _run_example("table_booking.py", openai_url, tmp_path) as example:
            result = await _call(example)
            _assert_clean_end(example)
        report = _report(openai_url)

    _assert_heard_a_reply(result)
    # The round trip: the LLM asked for the function with the fake's arguments...
    assert report["tool_calls"] >= 1
    conversations = report["chat_messages"]
    asked = [
        call["function"]
        for messages in conversations
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("tool_calls") or []
    ]
    assert {"name": "book_table", "arguments": tool_call[1]} in asked
    # ...the example's function ran and its result went back to the LLM as a tool message...
    results = [
        json.loads(messages[-1]["content"])
        for messages in conversations
        if messages[-1]["role"] == "tool"
    ]
    assert results, f"no chat request ended with the tool's result: {conversations}"
    for booking in results:
        assert {k: booking[k] for k in BOOKING_ARGS} == BOOKING_ARGS
        assert len(booking["confirmation"]) == 6
    # ...and the LLM's answer quoting the confirmation code was spoken.
    spoken = " ".join(report["speech_inputs"])
    assert any(booking["confirmation"] in spoken for booking in results), spoken
    # The greeting came from an LLM run queued on connect, before the caller said anything.
    assert [m["role"] for m in conversations[0]] == ["system"]
    assert report["transcriptions"] >= 1


async def test_smart_turn_runs_on_pipecats_runner(tmp_path: Path) -> None:
    with run_fake_openai_process() as openai_url:
        with _run_example("smart_turn.py", openai_url, tmp_path) as example:
            result = await _call(example)
            _assert_clean_end(example)
        report = _report(openai_url)

    _assert_heard_a_reply(result)
    # The bundled Smart Turn model loaded (nothing downloaded: the test has no internet).
    assert "Loaded Local Smart Turn v3" in example.log
    # The caller's turn ended and was answered: the fake's transcript reached the LLM, and its
    # reply to it (a weather question) was spoken.
    assert any(
        m["role"] == "user" and "weather" in m["content"]
        for messages in report["chat_messages"]
        for m in messages
    )
    assert "It is sunny and warm today." in " ".join(report["speech_inputs"])
