"""The official pipecat JS client talks to voicebots unchanged.

A tiny page (tests/web/official/) built from ``@pipecat-ai/client-js`` and
``@pipecat-ai/small-webrtc-transport`` — installed from the npm registry into a temporary
directory at test time and bundled with esbuild, never committed — is served by signaling
(started with that page's directory in its config) and runs in Chromium:
``startBotAndConnect({endpoint: "/start"})``, which makes the transport offer to
``/sessions/{id}/api/offer`` and trickle candidates there.
The transport's device layer is a small getUserMedia one (mic_media_manager.js): its default
downloads Daily's call machine from c.daily.co, which test machines cannot reach.
The package versions are pinned in tests/web/official/package.json; bump them on purpose.

It runs against the built-in agent and against a user's bot file given by path through
``VOICEBOTS_BOT`` (an ordinary pipecat runner-convention file outside the checkout), since
the client must not be able to tell them apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from benchmarks.harness import Redis, System, run_fake_openai_process, run_system, wait_until
from tests import FIXTURES, ROOT
from tests.web.browser import launch_chromium, make_mic_wav, run_playwright

SOURCES = ROOT / "tests" / "web" / "official"
FAKE_TRANSCRIPT = "what is the weather like today"
FAKE_REPLY = "It is sunny and warm today."
#: A user's bot file: pipecat's runner convention, the built-in agent's pipeline inside.
USER_BOT = """
from loguru import logger
from pipecat.runner.types import RunnerArguments

from bots.agent import bot as agent


async def bot(runner_args: RunnerArguments):
    logger.info(f"user bot file: {type(runner_args).__name__} {runner_args.session_id}")
    await agent(runner_args)
"""
#: Signaling as ``voicebots signaling`` runs it, serving the page directory given as argv[1]
#: in place of voicebots' own (a field of its config that no setting reaches).
SIGNALING_WITH_SITE = """
import dataclasses, os, sys
from common.logs import configure_logging
from signaling.config import SignalingConfig
from signaling.service import run_signaling
config = dataclasses.replace(SignalingConfig.from_env(os.environ), web_dir=sys.argv[1])
configure_logging("signaling", os.environ)
run_signaling(config)
"""
#: What npm prints when it cannot reach the registry (as opposed to a broken package.json).
_OFFLINE_MARKERS = (
    "ENOTFOUND",
    "EAI_AGAIN",
    "ECONNREFUSED",
    "ECONNRESET",
    "ETIMEDOUT",
    "ENETUNREACH",
    "EHOSTUNREACH",
    "network request",
    "FetchError",
)


def _build_page(work: Path) -> Path:
    """npm install + esbuild into ``work``; returns a web dir with index.html and the bundle."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so the npm registry is unreachable from here")
    for name in ("package.json", "main.js", "mic_media_manager.js"):
        shutil.copy(SOURCES / name, work / name)
    try:
        install = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm registry unreachable: npm install timed out after 180 s")
    if install.returncode != 0:
        output = install.stdout + install.stderr
        if any(marker in output for marker in _OFFLINE_MARKERS):
            pytest.skip(f"npm registry unreachable: {output.strip()[-300:]}")
        raise AssertionError(f"npm install failed:\n{output[-3000:]}")
    site = work / "site"
    site.mkdir()
    shutil.copy(SOURCES / "index.html", site / "index.html")
    bundle = subprocess.run(
        [
            str(work / "node_modules" / ".bin" / "esbuild"),
            "main.js",
            "--bundle",
            "--format=esm",
            "--target=chrome110",
            f"--outfile={site / 'bundle.js'}",
            "--log-level=error",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bundle.returncode == 0, bundle.stderr
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page, built once for every bot this module calls."""
    return _build_page(tmp_path_factory.mktemp("official"))


def _events(page: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = page.evaluate("window.officialClient.events")
    return events


def _text(event: dict[str, Any]) -> str:
    data = event["data"]
    return str(data.get("text", "")) if isinstance(data, dict) else ""


def _texts(events: list[dict[str, Any]], kind: str) -> list[str]:
    return [_text(e) for e in events if e["type"] == kind]


def _replied(events: list[dict[str, Any]]) -> bool:
    kinds = [e["type"] for e in events]
    reply = next((i for i, e in enumerate(events) if FAKE_REPLY in _text(e)), None)
    return reply is not None and "bot-stopped-speaking" in kinds[reply:]


def _serve_site(system: System, site: Path) -> None:
    """Restart the system's signaling with the official client's page as its page."""
    system.stop("signaling")
    log = system.logs / "signaling.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SIGNALING_WITH_SITE, str(site)],
            env=system.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    system.processes["signaling"] = process

    def healthy() -> bool:
        return httpx.get(f"{system.url}/healthz", timeout=2).status_code == 200

    wait_until(healthy, 30, "signaling", process, log)


def _live_session(system: System) -> str:
    calls = system.status()["calls"]
    assert len(calls) == 1, calls
    return str(calls[0]["session_id"])


@pytest.mark.parametrize("bot", ["builtin", "user_bot_file"])
def test_official_client_receives_transcripts(
    redis_server: Redis, site: Path, tmp_path: Path, bot: str
) -> None:
    mic = make_mic_wav(FIXTURES / "hello.wav", tmp_path / "mic.wav", lead_s=1.0, tail_s=30)
    env = {"VOICEBOTS_GREETING": ""}
    bot_file = tmp_path / "my_bot.py"
    if bot == "user_bot_file":
        bot_file.write_text(USER_BOT)
        env["VOICEBOTS_BOT"] = str(bot_file)
    with (
        run_fake_openai_process("--transcript", FAKE_TRANSCRIPT, "--reply", FAKE_REPLY) as url,
        run_system(
            redis_server,
            {**env, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": "sk-test"},
            min_idle=1,
            max_bots=2,
        ) as system,
        run_playwright() as playwright,
    ):
        _serve_site(system, site)
        browser = launch_chromium(playwright, mic)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(system.url)
            expect(page.locator("#state")).to_have_text("ready")
            # Resolves once the transport is connected and the bot has answered client-ready.
            assert page.evaluate("window.officialClient.start()") == "connected", _events(page)
            session_id = _live_session(system)

            # Until the reply has been spoken to the end (so the bot records it as a turn).
            deadline = time.monotonic() + 30
            events = _events(page)
            while time.monotonic() < deadline and not _replied(events):
                page.wait_for_timeout(200)
                events = _events(page)
            kinds = [e["type"] for e in events]
            assert "bot-ready" in kinds, kinds
            assert any(FAKE_TRANSCRIPT in t for t in _texts(events, "user-transcript")), events
            assert any(FAKE_REPLY in t for t in _texts(events, "bot-output")), events
            assert any(FAKE_REPLY in t for t in _texts(events, "bot-transcript")), events
            assert "bot-started-speaking" in kinds, kinds
            remote = [e["data"] for e in events if e["type"] == "track-started"]
            assert {"kind": "audio", "local": False} in remote, events
            assert not [e for e in events if e["type"] in ("error", "start-failed")], events

            page.evaluate("window.officialClient.stop()")
            assert not errors, errors
        finally:
            browser.close()

        system.wait_until(lambda: system.status()["active_calls"] == 0, 15, "call ended")
        # The official client never sends DELETE: the bot ends the call when the peer closes.
        record = redis_server.record(session_id)
        assert record.get("status") == "completed", record
        roles = {line["role"] for line in json.loads(record["transcript"])}
        assert roles == {"user", "assistant"}, record["transcript"]
        ran = [
            line["message"]
            for line in json.loads(record.get("logs", "[]"))
            if "user bot file:" in line.get("message", "")
        ]
        if bot == "user_bot_file":
            assert str(bot_file) in system.log("spawner")
            # The file's own bot() ran, with pipecat's runner arguments for this session.
            assert ran == [f"user bot file: SmallWebRTCRunnerArguments {session_id}"], ran
        else:
            assert not ran, ran
