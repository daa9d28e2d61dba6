"""``docker compose up`` for real: docker-compose.yml and the Dockerfile, run by podman.

No Docker engine and no container registry here: tests/compose/ makes the base images the
Dockerfile and docker-compose.yml name (python:3.11-slim, redis:7-alpine) from a Debian bookworm
root filesystem (debootstrap, cached), builds the Dockerfile as compose's ``voicebots:local`` and
runs docker-compose.yml with Debian's podman-compose. On a copy of the build context, the test:

- builds the image and ``up -d``; redis, spawner and signaling pass their compose healthchecks
  (run with ``podman exec``: without systemd podman schedules none), the worker runs;
- places a call from the host with the headless caller through the published HTTP port; the
  bot's audio comes back over the published UDP range; the record lands in compose's Redis and
  the worker writes its summary; then the demo page, in the host's Chromium, talks to the bot;
- runs ``down`` with a call in progress: the spawner drains it, and the call is recorded;
- changes a line of bots/ and rebuilds: only the layers from ``COPY bots/`` on are rebuilt (the
  dependency layer is cached);
- the second ``up`` is a user's: their own bot (examples/table_booking.py, a tool-calling agent)
  mounted into the spawner by the ``docker-compose.override.yml`` README shows, and provider
  settings in a ``.env`` pointing at the fake OpenAI server on the host (reached through
  podman's host gateway). It runs the new image; a call books a table and the record holds the
  booking's confirmation code as the bot said it; the worker summarizes it and the drained call
  with that LLM.

It prints its phase timings. Needs root, podman, podman-compose, runc and debootstrap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from benchmarks.caller import CallOptions, CallResult, run_call
from benchmarks.harness import free_port, run_fake_openai_process
from common.record import call_key
from tests import FIXTURES, ROOT
from tests.test_web_page import _INBOUND_AUDIO
from tests.web.browser import ARTIFACTS, launch_chromium, make_mic_wav, run_playwright

COMPOSE_DIR = ROOT / "tests" / "compose"
UDP_PORTS = range(40000, 40032)  # docker-compose.yml's VOICEBOTS_UDP_PORTS, published 1:1
TOOLS = {
    "podman": "podman",
    "podman-compose": "podman-compose",
    "runc": "runc",
    "debootstrap": "debootstrap",
}

#: What the fake OpenAI server hears, whatever the caller says, and the tool call it answers
#: with (as tests/test_examples_voicebots.py drives the same example).
BOOKING_TRANSCRIPT = "I would like to book a table for two at seven"
BOOKING_ARGS = {"name": "Ann", "party_size": 2, "time": "seven tonight"}
#: README's "Your own bot", as a user writes it next to docker-compose.yml.
OWN_BOT_OVERRIDE = """\
services:
  spawner:
    volumes:
      - ./mybot.py:/app/mybot.py:ro
    environment:
      VOICEBOTS_BOT: /app/mybot.py
"""
#: The host as containers on a podman network see it (Docker Desktop's is host.docker.internal).
HOST_FROM_CONTAINERS = "host.containers.internal"

pytestmark = pytest.mark.timeout(900)


def _missing_tools() -> list[str]:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if not Path("/usr/lib/python3/dist-packages/podman_compose.py").exists():
        missing.append("podman-compose (Debian's, for /usr/bin/python3)")
    return missing


def _clean_env() -> dict[str, str]:
    """This process's environment without settings that compose would interpolate."""
    prefixes = ("VOICEBOTS_", "OPENAI_", "ELEVENLABS_", "REDIS_", "COMPOSE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.setdefault("CONTAINERS_CONF", str(COMPOSE_DIR / "containers.conf"))
    return env


def _copy_context(dest: Path) -> None:
    """The files the image is built from (what .dockerignore lets in) and the compose files."""
    dest.mkdir(parents=True)
    for name in ("Dockerfile", "docker-compose.yml", ".dockerignore"):
        shutil.copy2(ROOT / name, dest / name)
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        if not line.startswith("!"):
            continue
        rel = line[1:].rstrip("/")
        src, out = ROOT / rel, dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, out)


@dataclass
class Stack:
    """One compose project, run from a copy of the build context."""

    context: Path
    project: str
    http_port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **_clean_env(),
            "VOICEBOTS_COMPOSE_DIR": str(self.context),
            "VOICEBOTS_HTTP_PORT": str(self.http_port),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def run(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            args,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}"
            )
        return done.stdout

    def compose(self, *args: str, timeout: float = 300) -> str:
        return self.run(str(COMPOSE_DIR / "compose.sh"), "-p", self.project, *args, timeout=timeout)

    def timed(self, phase: str, *args: str, timeout: float = 600) -> str:
        start = time.monotonic()
        out = self.run(*args, timeout=timeout)
        self.timings[phase] = time.monotonic() - start
        return out

    def container(self, service: str) -> str:
        # Stopped ones too: a service that exited is named with its logs, not "not running".
        names = self.run(
            "podman",
            "ps",
            "--all",
            "--filter",
            f"label=io.podman.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        ).split()
        assert len(names) == 1, f"{service}: running containers {names}"
        return names[0]

    def logs(self, container: str, tail: int | None = None) -> str:
        """A container's output: voicebots logs to stderr, which ``podman logs`` passes on as
        its own stderr."""
        tail_args = ["--tail", str(tail)] if tail is not None else []
        return subprocess.run(
            ["podman", "logs", *tail_args, container],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
            check=False,
        ).stdout

    def redis(self, *args: str) -> str:
        return self.run("podman", "exec", self.container("redis"), "redis-cli", "--raw", *args)

    def wait_healthy(self, timeout: float = 120) -> None:
        """Every service runs; each compose healthcheck passes (run by hand: podman schedules
        healthchecks with systemd timers, and there is no systemd here)."""
        services = yaml.safe_load((self.context / "docker-compose.yml").read_text())["services"]
        deadline = time.monotonic() + timeout
        for name, service in services.items():
            test = (service.get("healthcheck") or {}).get("test")
            while True:
                container = self.container(name)
                state = self.run("podman", "inspect", "--format", "{{.State.Status}}", container)
                probe = (
                    subprocess.run(
                        ["podman", "exec", container, *test[1:]],
                        env=self.env,
                        capture_output=True,
                        timeout=30,
                        check=False,
                    ).returncode
                    if test and state.strip() == "running"
                    else 0
                )
                if state.strip() == "running" and probe == 0:
                    self.timings[f"  {name} healthy at"] = timeout - (deadline - time.monotonic())
                    break
                if time.monotonic() > deadline:
                    logs = self.logs(container, tail=30)
                    pytest.fail(
                        f"{name} not healthy after {timeout:.0f} s ({state.strip()}):\n{logs}"
                    )
                time.sleep(0.5)

    def record(self, session_id: str, *, summary: bool, timeout: float = 60) -> dict[str, str]:
        """The call's record in compose's Redis (with the worker's summary, if asked)."""
        deadline = time.monotonic() + timeout
        while True:
            flat = self.redis("HGETALL", call_key(session_id)).splitlines()
            record = dict(zip(flat[::2], flat[1::2], strict=False))
            if record.get("status") == "completed" and (record.get("summary") or not summary):
                return record
            if time.monotonic() > deadline:
                pytest.fail(
                    f"no completed record{' with a summary' if summary else ''} for "
                    f"{session_id} in compose's Redis after {timeout:.0f} s: {record}"
                )
            time.sleep(0.5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    missing = _missing_tools()
    if missing:
        pytest.fail(
            f"docker compose on podman needs: {', '.join(missing)} "
            "(apt-get install -y podman podman-compose runc debootstrap)"
        )
    if os.geteuid() != 0:
        pytest.fail(
            "docker compose on podman needs root here (debootstrap, rootful podman "
            "with bridge networks)"
        )
    busy = []
    for port in UDP_PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                busy.append(port)
    if busy:
        pytest.fail(
            f"compose publishes UDP {UDP_PORTS.start}-{UDP_PORTS.stop - 1} 1:1; "
            f"in use on this host: {busy}"
        )
    _copy_context(tmp_path / "context")
    stack = Stack(tmp_path / "context", f"vbtest{os.getpid()}", free_port())
    try:
        yield stack
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(
                [str(COMPOSE_DIR / "compose.sh"), "-p", stack.project, "down", "-t", "5", "-v"],
                env=stack.env,
                capture_output=True,
                timeout=120,
                check=False,
            )
            subprocess.run(
                ["podman", "network", "rm", "-f", f"{stack.project}_default"],
                env=stack.env,
                capture_output=True,
                timeout=60,
                check=False,
            )
        print(
            "\ncompose phase timings: "
            + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in stack.timings.items())
        )


@pytest.fixture
def booking_openai_port() -> Iterator[int]:
    """The fake OpenAI server answering a booking request with a ``book_table`` call, on every
    interface of the host so that the containers reach it; yields its port."""
    tool_call = ("--tool-call", "book_table", json.dumps(BOOKING_ARGS))
    with run_fake_openai_process(
        "--host", "0.0.0.0", "--transcript", BOOKING_TRANSCRIPT, *tool_call
    ) as url:
        yield int(url.split(":")[2].split("/")[0])


def _own_bot(context: Path, openai_port: int) -> None:
    """What a user adds next to docker-compose.yml to run their bot with their provider."""
    shutil.copy2(ROOT / "examples" / "table_booking.py", context / "mybot.py")
    (context / "docker-compose.override.yml").write_text(OWN_BOT_OVERRIDE)
    (context / ".env").write_text(
        f"OPENAI_BASE_URL=http://{HOST_FROM_CONTAINERS}:{openai_port}/v1\nOPENAI_API_KEY=sk-test\n"
    )


def _assert_booked(record: dict[str, str], report: dict[str, Any]) -> None:
    """The tool's round trip in the mounted bot: the fake asked for ``book_table``, the bot's
    function answered with a confirmation code, and the bot said that code after the caller's
    request, as its record shows."""
    lines = [(line["role"], line["text"]) for line in json.loads(record["transcript"])]
    roles = [role for role, _ in lines]
    assert "user" in roles, lines
    user = roles.index("user")
    assert BOOKING_TRANSCRIPT in lines[user][1], lines
    assert report["tool_calls"] >= 1, report
    results = [
        json.loads(messages[-1]["content"])
        for messages in report["chat_messages"]
        if messages[-1]["role"] == "tool"
    ]
    assert results, f"no chat request ended with the tool's result: {report['chat_messages']}"
    codes = {booking["confirmation"] for booking in results}
    for booking in results:
        assert {k: booking[k] for k in BOOKING_ARGS} == BOOKING_ARGS, booking
    said = " ".join(text for role, text in lines[user + 1 :] if role == "assistant")
    assert any(code in said for code in codes), (codes, lines)
    logs = [line.get("message", "") for line in json.loads(record["logs"])]
    assert any(m.startswith("Booked a table for 2") for m in logs), logs


def _build_steps(output: str) -> list[tuple[str, bool]]:
    """``podman build`` output as (instruction, taken from the cache) per step."""
    steps: list[tuple[str, bool]] = []
    for line in output.splitlines():
        match = re.match(r"STEP \d+/\d+: (.*)", line)
        if match:
            steps.append((match.group(1), False))
        elif line.startswith("--> Using cache") and steps:
            steps[-1] = (steps[-1][0], True)
    return steps


def _talk_on_the_page(url: str, work: Path) -> dict[str, Any]:
    """The demo page from the host's Chromium, through the published port: Talk, connected,
    the agent's greeting heard and shown; a screenshot of it in artifacts/compose-page.png."""
    from playwright.sync_api import expect

    mic = make_mic_wav(FIXTURES / "hello.wav", work / "mic.wav", lead_s=2.0, tail_s=10)
    with run_playwright() as playwright:
        browser = launch_chromium(playwright, mic)
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.get_by_role("heading", name="Talk to the agent")).to_be_visible()
            page.get_by_role("button", name="Talk").click()
            expect(page.locator("#status-text")).to_have_text("Connected", timeout=20_000)
            packets, lines = 0.0, []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stats = page.evaluate(_INBOUND_AUDIO) or {}
                packets = max(packets, float(stats.get("totalAudioEnergy", 0)))
                lines = page.evaluate("window.voicebots.transcript()")
                if packets > 0 and any(line["role"] == "assistant" for line in lines):
                    break
                page.wait_for_timeout(200)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "compose-page.png"))
            page.get_by_role("button", name="Hang up").click()
            expect(page.locator("#status-text")).to_have_text("Call ended", timeout=10_000)
            return {"audio_energy": packets, "lines": lines}
        finally:
            browser.close()


async def _call(stack: Stack, **options: Any) -> CallResult:
    return await run_call(CallOptions(url=stack.url, wav=FIXTURES / "hello.wav", **options))


async def test_docker_compose_up_on_podman(
    stack: Stack, booking_openai_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    compose_sh = str(COMPOSE_DIR / "compose.sh")
    stack.timed("base images", str(COMPOSE_DIR / "base-images.sh"))
    stack.timed("build", compose_sh, "build", timeout=900)

    stack.timed("up", compose_sh, "-p", stack.project, "up", "-d", "--no-build")
    start = time.monotonic()
    stack.wait_healthy()
    stack.timings["healthy"] = time.monotonic() - start

    # A call from the host, through the published port and UDP range.
    start = time.monotonic()
    result = await _call(stack, max_seconds=15.0)
    stack.timings["first call"] = time.monotonic() - start
    if result.connected_s is None:
        logs = stack.logs(stack.container("spawner"), tail=40)
        bot_logs = "\n".join(str(line) for line in result.session.get("logs", []))
        pytest.fail(
            f"no ICE connection over the published UDP range:\n{bot_logs}\nspawner:\n{logs}"
        )
    assert result.first_audio_at is not None and result.voiced_s > 0.5, "no audio came back"
    record = stack.record(result.session_id, summary=True)
    transcript = json.loads(record["transcript"])
    assert any(line["role"] == "assistant" for line in transcript), transcript
    assert any(line["role"] == "user" for line in transcript), transcript
    assert record["summary_source"] == "offline"
    # The demo page, from the host's browser.
    start = time.monotonic()
    page = await asyncio.to_thread(_talk_on_the_page, stack.url, stack.context)
    stack.timings["page call"] = time.monotonic() - start
    assert page["audio_energy"] > 0, page
    assert any(line["role"] == "assistant" for line in page["lines"]), page

    # `down` with a call in progress: signaling stops first, the spawner drains the call (the
    # caller hangs up at max_seconds, well inside VOICEBOTS_DRAIN_TIMEOUT), then Redis stops.
    keys_before = set(stack.redis("KEYS", "voicebots:call:*").split())
    in_call = asyncio.ensure_future(_call(stack, max_seconds=15.0, reply_silence=60.0))
    deadline = time.monotonic() + 20
    while True:  # polled off the event loop: the caller's media runs on it
        keys = set((await asyncio.to_thread(stack.redis, "KEYS", "voicebots:call:*")).split())
        if keys != keys_before:
            break
        assert time.monotonic() < deadline, "the second call never started"
        await asyncio.sleep(0.2)
    [drained_key] = keys - keys_before
    await asyncio.sleep(3.0)  # the call is under way (greeting, the caller's speech)
    start = time.monotonic()
    await asyncio.to_thread(stack.compose, "down", "-t", "45", timeout=120)
    stack.timings["down (draining)"] = time.monotonic() - start
    # The caller's last session GET may fail: signaling is gone.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(in_call, timeout=30)
    assert stack.timings["down (draining)"] > 5, "down did not wait for the call to drain"

    # A trivial code change: the second build takes everything up to COPY bots/ from the cache.
    init = stack.context / "bots" / "__init__.py"
    init.write_text(init.read_text() + f"\n# compose test rebuild {uuid.uuid4().hex}\n")
    steps = _build_steps(stack.timed("rebuild", compose_sh, "build", timeout=900))
    first_changed = next(i for i, (step, _) in enumerate(steps) if step.startswith("COPY bots/"))
    with capsys.disabled():
        print(
            "\nrebuild: "
            + "; ".join(
                f"{step[:40]} [{'cached' if cached else 'built'}]" for step, cached in steps
            )
        )
    assert all(cached for _, cached in steps[1:first_changed]), steps
    assert not any(cached for _, cached in steps[first_changed:]), steps
    assert any("pip install -r" in step for step, _ in steps[:first_changed])

    # The second up is a user's: their bot mounted by the override README shows, their
    # provider in .env. It runs the new image; Redis kept the drained call (its volume); the
    # worker, stopped before the job was queued, writes its summary now.
    _own_bot(stack.context, booking_openai_port)
    stack.timed("second up", compose_sh, "-p", stack.project, "up", "-d", "--no-build")
    stack.wait_healthy()
    image = stack.run("podman", "image", "inspect", "--format", "{{.Id}}", "voicebots:local")
    running = stack.run("podman", "inspect", "--format", "{{.Image}}", stack.container("spawner"))
    assert running.strip() == image.strip()
    spawner_log = stack.logs(stack.container("spawner"))
    assert "bot file: /app/mybot.py" in spawner_log, spawner_log[-3000:]

    # A call to the user's bot. The lead silence lets its greeting (an LLM run on connect)
    # finish before the caller speaks.
    start = time.monotonic()
    booking = await _call(stack, lead_silence=3.0, max_seconds=30.0)
    stack.timings["own-bot call"] = time.monotonic() - start
    assert booking.connected_s is not None, booking.session.get("logs")
    assert booking.first_audio_at is not None and booking.voiced_s > 0.5, "no audio came back"
    booked = stack.record(booking.session_id, summary=True)
    async with httpx.AsyncClient(timeout=5) as client:
        fake = await client.get(f"http://127.0.0.1:{booking_openai_port}/_fake/requests")
    report = fake.json()
    _assert_booked(booked, report)
    # .env's provider reached the worker too: the summary is the (fake) OpenAI LLM's.
    assert booked["summary_source"] == "openai", booked
    drained = stack.record(drained_key.removeprefix("voicebots:call:"), summary=True)
    assert json.loads(drained["transcript"]), drained
    # The caller hung up (signaling, and with it the hangup request, were gone: the peer left);
    # the call ran its course rather than being cut at SIGTERM.
    assert drained["end_reason"] in ("hangup", "client_hangup"), drained
    assert float(drained["ended_at"]) - float(drained["started_at"]) > 12, drained

    with capsys.disabled():
        print(
            "\ncompose phase timings: "
            + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in stack.timings.items())
        )
