"""The talk-to-agent page (web/) in Debian's Chromium against the real running system.

signaling and spawner run as processes with a private Redis; providers are the fake
OpenAI-compatible server; Chromium's fake microphone plays the speech fixture. Screenshots
and the measured timings go to ``artifacts/`` (look at them).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, ViewportSize, expect

from benchmarks.harness import Redis, System, run_fake_openai_process, run_system
from tests import FIXTURES
from tests.web.browser import ARTIFACTS, launch_chromium, make_mic_wav, run_playwright

FAKE_TRANSCRIPT = "what is the weather like today"
FAKE_REPLY = "It is sunny and warm today."
#: Silence before the caller speaks, so the bot's greeting ends first (the fixture loops).
LEAD_S = 3.5
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}

_INBOUND_AUDIO = """async () => {
  const pc = window.voicebots.pc;
  if (!pc) return null;
  let found = null;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") found = s;
  });
  return found && {
    packetsReceived: found.packetsReceived || 0,
    audioLevel: found.audioLevel || 0,
    totalAudioEnergy: found.totalAudioEnergy || 0,
  };
}"""


@pytest.fixture(scope="module")
def openai_url() -> Iterator[str]:
    with run_fake_openai_process("--transcript", FAKE_TRANSCRIPT, "--reply", FAKE_REPLY) as url:
        yield url


@pytest.fixture(scope="module")
def system(redis_server: Redis, openai_url: str) -> Iterator[System]:
    env = {"OPENAI_BASE_URL": openai_url, "OPENAI_API_KEY": "sk-test"}
    with run_system(redis_server, env, min_idle=1, max_bots=2) as running:
        yield running


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mic") / "hello-48k.wav"
    return make_mic_wav(FIXTURES / "hello.wav", out, lead_s=LEAD_S, tail_s=30)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with run_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright, mic_wav: Path) -> Iterator[Browser]:
    chromium = launch_chromium(playwright, mic_wav)
    yield chromium
    chromium.close()


def _open(browser: Browser, url: str, viewport: ViewportSize = LAPTOP) -> Page:
    page = browser.new_page(viewport=viewport)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    expect(page.get_by_role("heading", name="Talk to the agent")).to_be_visible()
    setattr(page, "_errors", errors)  # noqa: B010 - read back by _no_page_errors
    return page


def _no_page_errors(page: Page) -> None:
    errors: list[str] = getattr(page, "_errors", [])
    assert not errors, f"uncaught errors in the page: {errors}"


def _expect_connected(page: Page, system: System, timeout: float = 15_000) -> None:
    try:
        expect(page.locator("#status-text")).to_have_text("Connected", timeout=timeout)
    except AssertionError as exc:
        notice = page.locator("#notice").inner_text()
        logs = "\n".join(f"--- {n}:\n{system.log(n)[-2000:]}" for n in ("signaling", "spawner"))
        raise AssertionError(f"{exc}\nthe page says: {notice}\n{logs}") from None


def _lines(page: Page) -> list[dict[str, str]]:
    lines: list[dict[str, str]] = page.evaluate("window.voicebots.transcript()")
    return lines


def _wait_ended(redis_server: Redis, session_id: str, timeout: float = 10) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        record = redis_server.record(session_id)
        if record.get("status") not in (None, "active") or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def test_talk_to_the_agent(system: System, browser: Browser, redis_server: Redis) -> None:
    page = _open(browser, system.url)
    expect(page.locator("#status-text")).to_have_text("Ready")
    panel_before = page.locator("#transcript-panel").bounding_box()
    page.get_by_role("button", name="Talk").click()
    _expect_connected(page, system)
    session_id = page.evaluate("window.voicebots.sessionId")
    assert session_id

    # Sample the bot's inbound RTP while the greeting and the reply play.
    peak: dict[str, float] = {"packetsReceived": 0, "audioLevel": 0, "totalAudioEnergy": 0}
    mic_peak = 0.0
    replied_at: float | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats: dict[str, Any] | None = page.evaluate(_INBOUND_AUDIO)
        for key, value in (stats or {}).items():
            peak[key] = max(peak[key], float(value))
        mic_peak = max(mic_peak, float(page.evaluate("window.voicebots.micLevel")))
        if replied_at is None and any(
            line["role"] == "assistant" and FAKE_REPLY in line["text"] for line in _lines(page)
        ):
            replied_at = time.monotonic()
            page.wait_for_timeout(400)  # the bubble's fade-in; the bot is speaking now
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web-page.png"))
        if replied_at is not None and time.monotonic() - replied_at > 1.5:
            break
        page.wait_for_timeout(100)
    assert replied_at is not None, f"no reply on the page; transcript {_lines(page)}"

    transcript = page.locator("#transcript")
    # The fake "transcribes" every VAD segment as the same text; the fixture may be heard as
    # one turn or two, so there may be more than one such line.
    expect(transcript.locator(".line-user", has_text=FAKE_TRANSCRIPT).first).to_be_visible()
    expect(transcript.locator(".line-assistant", has_text=FAKE_REPLY).first).to_be_visible()
    assert peak["packetsReceived"] > 0, peak
    assert peak["totalAudioEnergy"] > 0, peak
    assert peak["audioLevel"] > 0, peak
    assert mic_peak > 0.3, "the microphone meter never moved while the caller spoke"
    expect(page.locator("#latency-last")).to_have_text(re.compile(r"^\d+ ms$"))
    # The transcript scrolls inside a fixed-height panel: nothing moved as it grew.
    assert page.locator("#transcript-panel").bounding_box() == panel_before
    timings = page.evaluate("window.voicebots.timings")
    latencies = page.evaluate("window.voicebots.latencies()")
    assert latencies and all(0 < ms < 5000 for ms in latencies), latencies
    (ARTIFACTS / "web-timings.json").write_text(
        json.dumps({"timings_ms": timings, "latencies_ms": latencies, "peak": peak}, indent=2)
    )

    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("#status-text")).to_have_text("Call ended", timeout=10_000)
    expect(page.get_by_role("button", name="Talk again")).to_be_focused()
    _no_page_errors(page)

    record = _wait_ended(redis_server, session_id)
    assert record.get("status") == "completed", record
    assert record.get("end_reason") == "hangup", record
    roles = {line["role"] for line in json.loads(record["transcript"])}
    assert roles == {"user", "assistant"}, record["transcript"]
    page.close()


def test_microphone_denied(system: System, playwright: Playwright) -> None:
    # No fake permission UI and no granted permission: Chromium refuses getUserMedia.
    chromium = launch_chromium(playwright, auto_allow_mic=False)
    try:
        page = _open(chromium, system.url, PHONE)
        page.get_by_role("button", name="Talk").click()
        notice = page.get_by_role("alert")
        expect(notice).to_contain_text("Microphone access is blocked")
        expect(notice).to_contain_text("Allow this site to use your microphone")
        expect(page.locator("#status-text")).to_have_text("Microphone access is blocked")
        expect(page.get_by_role("button", name="Talk again")).to_be_visible()
        assert page.evaluate("window.voicebots.sessionId") is None
        _no_page_errors(page)
    finally:
        chromium.close()


def test_renegotiation_and_restart(system: System, browser: Browser, redis_server: Redis) -> None:
    """The page answers the bot's "renegotiate" request, and survives a restart_pc."""
    page = _open(browser, system.url)
    page.get_by_role("button", name="Talk").click()
    _expect_connected(page, system)
    page.wait_for_function("window.voicebots.timings.botReady !== undefined", timeout=10_000)
    session_id = page.evaluate("window.voicebots.sessionId")
    first_pc = page.evaluate("window.voicebots.app.call.pcId")

    # What the transport sends on the data channel when the bot wants a new offer.
    page.evaluate(
        """window.voicebots.app.call._onMessage(JSON.stringify(
            {type: "signalling", message: {type: "renegotiate"}}))"""
    )
    page.wait_for_function("window.voicebots.app.call.negotiations === 2", timeout=10_000)
    assert page.evaluate("window.voicebots.app.call.pcId") == first_pc
    expect(page.locator("#status-text")).to_have_text("Connected")

    # What the page does when a connected call loses its network path: a new peer
    # connection for the same call, offered with restart_pc.
    page.evaluate("window.voicebots.app.call._restart()")
    page.wait_for_function("window.voicebots.app.call.negotiations === 3", timeout=10_000)
    _expect_connected(page, system)
    assert page.evaluate("window.voicebots.app.call.pcId") != first_pc
    deadline = time.monotonic() + 10
    while (page.evaluate(_INBOUND_AUDIO) or {}).get("packetsReceived", 0) == 0:
        assert time.monotonic() < deadline, "no RTP from the bot on the restarted connection"
        page.wait_for_timeout(100)

    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("#status-text")).to_have_text("Call ended", timeout=10_000)
    _no_page_errors(page)
    record = _wait_ended(redis_server, session_id)
    assert record.get("status") == "completed", record
    page.close()


def test_ice_failure(system: System, browser: Browser, redis_server: Redis) -> None:
    # "#relay" makes the page use TURN only; with no TURN server there is no network path.
    page = _open(browser, f"{system.url}/#relay")
    started = time.monotonic()
    page.get_by_role("button", name="Talk").click()
    expect(page.locator("#status-text")).to_have_text("Connecting…", timeout=10_000)
    session_id = page.evaluate("window.voicebots.sessionId")
    notice = page.get_by_role("alert")
    expect(notice).to_contain_text("Couldn't connect the audio", timeout=30_000)
    expect(notice).to_contain_text("blocks UDP")
    assert time.monotonic() - started < 25
    expect(page.get_by_role("button", name="Talk again")).to_be_visible()
    _no_page_errors(page)
    record = _wait_ended(redis_server, session_id)
    assert record.get("status") != "active", record
    page.close()


SITE_KEY = "site-key-0123456789abcdef"


def test_keys_wrong_key_and_session_token(
    redis_server: Redis, browser: Browser, openai_url: str
) -> None:
    env = {"OPENAI_BASE_URL": openai_url, "VOICEBOTS_API_KEYS": SITE_KEY}
    with run_system(redis_server, env, min_idle=1, max_bots=2) as keyed:
        # A wrong key in the fragment: the real server's 401, shown in words.
        page = _open(browser, f"{keyed.url}/#key=wrong")
        page.get_by_role("button", name="Talk").click()
        expect(page.get_by_role("alert")).to_contain_text("not authorised to talk to this agent")
        expect(page.locator("#status-text")).to_have_text(re.compile("not authorised"))
        _no_page_errors(page)
        page.close()

        # The site's server starts the session with its key and hands the page a token.
        started = httpx.post(
            f"{keyed.url}/start", json={}, headers={"Authorization": f"Bearer {SITE_KEY}"}
        ).json()
        session_id, token = started["sessionId"], started["token"]
        page = _open(browser, f"{keyed.url}/#session={session_id}&token={token}")
        page.get_by_role("button", name="Talk").click()
        _expect_connected(page, keyed)
        assert page.evaluate("window.voicebots.sessionId") == session_id
        page.wait_for_function(
            "window.voicebots.transcript().some((line) => line.role === 'user')", timeout=20_000
        )
        page.get_by_role("button", name="Hang up").click()
        record = _wait_ended(redis_server, session_id)
        _no_page_errors(page)
        page.close()

    assert record["status"] == "completed" and record["end_reason"] == "hangup"


def test_all_agents_busy_then_retry(redis_server: Redis, browser: Browser, openai_url: str) -> None:
    env = {"OPENAI_BASE_URL": openai_url, "OPENAI_API_KEY": "sk-test", "VOICEBOTS_GREETING": ""}
    with run_system(redis_server, env, min_idle=1, max_bots=1) as system:
        first = _open(browser, system.url)
        first.get_by_role("button", name="Talk").click()
        _expect_connected(first, system)

        # The second caller uses the keyboard only, on a phone-sized screen.
        second = _open(browser, system.url, PHONE)
        second.locator("#talk").focus()
        second.keyboard.press("Enter")
        notice = second.get_by_role("alert")
        expect(notice).to_contain_text("All agents are busy", timeout=10_000)
        expect(second.locator("#notice-countdown")).to_have_text(
            re.compile(r"Trying again in \d+ s")
        )
        cancel = second.get_by_role("button", name="Cancel")
        expect(cancel).to_be_focused()
        ARTIFACTS.mkdir(exist_ok=True)
        second.screenshot(path=str(ARTIFACTS / "web-busy-phone.png"))

        # The busy page keeps retrying (its offers are refused and their sessions dropped),
        # and gets the bot once the first caller hangs up.
        first.get_by_role("button", name="Hang up").click()
        expect(first.locator("#status-text")).to_have_text("Call ended", timeout=10_000)
        _expect_connected(second, system, timeout=20_000)
        expect(notice).to_be_hidden()
        hangup = second.get_by_role("button", name="Hang up")
        expect(hangup).to_be_focused()
        second.keyboard.press("Enter")
        expect(second.locator("#status-text")).to_have_text("Call ended", timeout=10_000)
        _no_page_errors(first)
        _no_page_errors(second)
        system.wait_until(lambda: system.status()["active_calls"] == 0, 10, "both calls ended")


def test_server_unreachable(redis_server: Redis, browser: Browser) -> None:
    with run_system(redis_server, {"VOICEBOTS_GREETING": ""}, min_idle=1, max_bots=1) as system:
        page = _open(browser, system.url)
        system.stop("signaling")
        page.get_by_role("button", name="Talk").click()
        expect(page.get_by_role("alert")).to_contain_text("Can't reach the server")
        expect(page.get_by_role("button", name="Talk again")).to_be_visible()
        _no_page_errors(page)
