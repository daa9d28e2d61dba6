"""Authentication, CORS, rate limits and the per-key call cap, over real processes.

One signaling + spawner pair with API keys runs for the module. Every refused request is
checked to have been refused at the edge: the spawner's sessions, idle bots and calls are
the same after it as before. Signaling trusts ``X-Forwarded-For`` here, so each test counts
against its own client address.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks.caller import CallOptions, run_call
from benchmarks.harness import Redis, System, run_system
from signaling.auth import SessionTokens
from signaling.config import SecurityConfig
from tests import FIXTURES
from tests.test_security_sdp import OFFER_SDP, _without

KEY_A = "key-alpha-5b8e0c7d9f14a2e6"
KEY_B = "key-bravo-0f3a9d2c6b7e8145"
METRICS_TOKEN = "scrape-7c41e9a0d2b85f36"
ORIGIN = "https://app.example.com"
ENV = {
    "VOICEBOTS_API_KEYS": f"{KEY_A},{KEY_B}",
    "VOICEBOTS_ALLOWED_ORIGINS": f"{ORIGIN},http://localhost:3000",
    "VOICEBOTS_TRUST_PROXY": "1",
    # Per minute: a burst of a third of it, then one request every 4 s.
    "VOICEBOTS_RATE_LIMIT": "15",
    "VOICEBOTS_MAX_CALLS_PER_KEY": "1",
    "VOICEBOTS_METRICS_TOKEN": METRICS_TOKEN,
}
#: Outlasts the longest call (VOICEBOTS_MAX_CALL_SECONDS), so it expires by a clock's turn.
TOKEN_TTL = SecurityConfig.from_env(ENV).token_ttl
BURST = SecurityConfig.from_env(ENV).rate_burst
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def system(redis_server: Redis) -> Iterator[System]:
    with run_system(redis_server, ENV, min_idle=1, max_bots=3) as running:
        yield running


def _client(system: System, key: str | None = KEY_A, **headers: str) -> httpx.Client:
    """A client with its own address (so its own rate-limit bucket) and, if given, a key."""
    all_headers = {"X-Forwarded-For": next(_addresses), **headers}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(base_url=system.url, headers=all_headers, timeout=10)


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _spawner_state(system: System) -> tuple[int, int, int]:
    status = system.status()
    return status["sessions"], status["pool"]["idle"], status["active_calls"]


def _start(system: System, key: str = KEY_A) -> dict[str, Any]:
    with _client(system, key) as client:
        reply = client.post("/start", json={})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _error(reply: httpx.Response, status: int) -> tuple[str, str]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    return error["code"], error["message"]


def _secret() -> bytes:
    return SecurityConfig.from_env({"VOICEBOTS_API_KEYS": f"{KEY_B},{KEY_A}"}).token_secret


NEEDS_KEY = "this request needs 'Authorization: Bearer <API key>'"
NEEDS_EITHER = "this request needs 'Authorization: Bearer <API key or session token>'"
INVALID = "invalid API key or session token"


def test_open_endpoints_need_no_credential(system: System) -> None:
    with _client(system, key=None) as client:
        for path in ("/healthz", "/readyz", "/openapi.json", "/"):
            assert client.get(path).status_code == 200, path
        assert client.get("/openapi.json").json()["openapi"].startswith("3.")


def test_unauthenticated_requests_are_refused_before_the_spawner(system: System) -> None:
    session = _start(system)["sessionId"]
    other = _start(system)
    forged = other["token"][:-2] + ("AA" if not other["token"].endswith("AA") else "BB")
    offer = {"sdp": OFFER_SDP, "type": "offer", "pc_id": None, "restart_pc": False}
    patch = {"pc_id": "pc", "candidates": []}
    cases: list[tuple[str, str, dict[str, str], Any, str]] = [
        ("POST", "/start", {}, {}, NEEDS_KEY),
        ("POST", "/start", {"Authorization": f"Basic {KEY_A}"}, {}, "the Authorization"),
        ("POST", "/start", _bearer("not-a-key-of-ours-123"), {}, "invalid API key"),
        ("POST", "/start", _bearer(other["token"]), {}, "a session token cannot do this"),
        ("POST", "/api/offer", {}, offer, NEEDS_KEY),
        ("POST", "/api/offer", _bearer(other["token"]), offer, "a session token cannot do this"),
        ("PATCH", "/api/offer", _bearer(KEY_A.upper()), patch, "invalid API key"),
        ("POST", f"/sessions/{session}/api/offer", {}, offer, NEEDS_EITHER),
        (
            "POST",
            f"/sessions/{session}/api/offer",
            _bearer(other["token"]),
            offer,
            "session token is for another session",
        ),
        ("PATCH", f"/sessions/{session}/api/offer", _bearer("vbs1.e30.AAAA"), patch, INVALID),
        ("GET", f"/api/sessions/{session}", _bearer(forged), None, INVALID),
        ("GET", f"/api/sessions/{session}", _bearer("Bearer"), None, INVALID),
        ("DELETE", f"/api/sessions/{session}", {}, None, NEEDS_EITHER),
    ]
    before = _spawner_state(system)
    for method, path, headers, body, message in cases:
        with _client(system, key=None, **headers) as client:
            reply = client.request(method, path, json=body)
        code, text = _error(reply, 401)
        assert code == "unauthorized" and text.startswith(message), (method, path, text)
        assert reply.headers["www-authenticate"] == 'Bearer realm="voicebots"'
    assert _spawner_state(system) == before
    # The session the refused DELETE named is still there.
    with _client(system) as client:
        assert client.get(f"/api/sessions/{session}").json()["status"] == "pending"
    # The spawner never saw the keys, or the tokens.
    log = system.log("spawner")
    assert KEY_A not in log and KEY_B not in log and other["token"] not in log


def test_a_session_token_works_for_its_own_session_only(system: System) -> None:
    started = _start(system)
    session, token = started["sessionId"], started["token"]
    assert time.time() + TOKEN_TTL - 60 <= started["tokenExpiresAt"] <= time.time() + TOKEN_TTL + 1
    with _client(system, key=None, **_bearer(token)) as page:
        status = page.get(f"/api/sessions/{session}")
        assert status.status_code == 200 and status.json()["status"] == "pending"
        assert status.json()["iceConfig"] == {"iceServers": []}
        # Past auth, the spawner answers: no such peer connection in this session.
        candidates = {"pc_id": "pc-1", "candidates": [{"candidate": ""}]}
        patched = page.patch(f"/sessions/{session}/api/offer", json=candidates)
        assert _error(patched, 404)[0] == "unknown_pc"
        # An offer the edge refuses is refused for its content, after auth.
        bad = page.post(f"/sessions/{session}/api/offer", json={"sdp": _without("a=fingerprint")})
        assert _error(bad, 400) == (
            "bad_request",
            "'sdp' has no DTLS fingerprint (a=fingerprint) for its audio m-line",
        )
        assert page.delete(f"/api/sessions/{session}").json()["status"] == "cancelled"


def test_an_api_key_acts_only_on_the_sessions_it_started(system: System) -> None:
    theirs = _start(system, KEY_B)["sessionId"]
    offer = {"sdp": OFFER_SDP, "type": "offer"}
    before = _spawner_state(system)
    with _client(system, KEY_A) as other_backend:
        replies = [
            other_backend.get(f"/api/sessions/{theirs}"),
            other_backend.delete(f"/api/sessions/{theirs}"),
            other_backend.post(f"/sessions/{theirs}/api/offer", json=offer),
            other_backend.patch(
                f"/sessions/{theirs}/api/offer", json={"pc_id": "pc-1", "candidates": []}
            ),
        ]
    # To another key the session does not exist: the same 404 as an unknown id.
    for reply in replies[:3]:
        assert _error(reply, 404) == ("unknown_session", f"no session {theirs}"), reply.text
    assert _error(replies[3], 404)[0] == "unknown_pc"
    assert _spawner_state(system) == before
    # Its own key (the customer's backend hanging up, say) still can.
    with _client(system, KEY_B) as backend:
        assert backend.get(f"/api/sessions/{theirs}").json()["status"] == "pending"
        assert backend.delete(f"/api/sessions/{theirs}").json()["status"] == "cancelled"


def test_metrics_need_the_metrics_token_or_an_api_key(system: System) -> None:
    with _client(system, key=None) as scraper:
        refused = scraper.get("/metrics")
        wrong = scraper.get("/metrics", headers=_bearer("scrape-not-the-token-0000"))
        token = _start(system)["token"]
        session_token = scraper.get("/metrics", headers=_bearer(token))
        by_token = scraper.get("/metrics", headers=_bearer(METRICS_TOKEN))
        by_key = scraper.get("/metrics", headers=_bearer(KEY_B))
    assert _error(refused, 401)[1] == (
        "this request needs 'Authorization: Bearer <metrics token or API key>'"
    )
    for reply in (wrong, session_token):
        assert _error(reply, 401)[1] == "invalid metrics token or API key"
    for reply in (by_token, by_key):
        assert reply.status_code == 200
        assert "voicebots_idle_bots" in reply.text
    assert METRICS_TOKEN not in system.log("signaling")


def test_session_tokens_expire(system: System) -> None:
    session = _start(system)["sessionId"]
    # Issued with the secret the server derives, one lifetime and a second ago.
    issued = time.time() - TOKEN_TTL - 1.0
    token = SessionTokens(_secret(), ttl=TOKEN_TTL, clock=lambda: issued).issue(session)[0]
    before = _spawner_state(system)
    with _client(system, key=None, **_bearer(token)) as page:
        for method in ("GET", "DELETE"):
            reply = page.request(method, f"/api/sessions/{session}")
            assert _error(reply, 401) == (
                "unauthorized",
                "session token has expired; ask your server for a new session",
            )
    assert _spawner_state(system) == before


def test_tokens_are_checked_with_the_secret_every_replica_derives(system: System) -> None:
    session = _start(system)["sessionId"]
    # Minted elsewhere (another replica, or this one before a restart): same keys, same secret.
    replica = SessionTokens(_secret(), ttl=600)
    token, _expires = replica.issue(session)
    with _client(system, key=None, **_bearer(token)) as page:
        assert page.get(f"/api/sessions/{session}").status_code == 200
    stale = SessionTokens(_secret(), ttl=600, clock=lambda: time.time() - 3600).issue(session)[0]
    strange = SessionTokens(b"some other secret, not ours", ttl=600).issue(session)[0]
    with _client(system, key=None) as page:
        expired = page.get(f"/api/sessions/{session}", headers=_bearer(stale))
        forged = page.get(f"/api/sessions/{session}", headers=_bearer(strange))
    assert _error(expired, 401)[1].startswith("session token has expired")
    assert _error(forged, 401)[1] == INVALID


# -- CORS ---------------------------------------------------------------------------------


def test_cors_preflight_from_an_allowed_origin(system: System) -> None:
    with _client(system, key=None) as browser:
        reply = browser.options(
            f"/sessions/{'a' * 32}/api/offer",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert reply.status_code == 204
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "PATCH" in reply.headers["access-control-allow-methods"]
    assert "Authorization" in reply.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in reply.headers


def test_cors_requests_from_an_allowed_origin_get_its_headers(system: System) -> None:
    with _client(system, Origin=ORIGIN) as browser:
        reply = browser.post("/start", json={})
        refused = browser.post("/start", json={}, headers={"Authorization": "Bearer nope"})
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "Origin" in reply.headers["vary"]
    # Errors carry them too, so the page can read why it was refused.
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert "Retry-After" in refused.headers["access-control-expose-headers"]


def test_cors_other_origins_are_refused_before_anything_happens(system: System) -> None:
    before = _spawner_state(system)
    with _client(system, Origin="https://evil.example") as browser:
        preflight = browser.options(
            "/start",
            headers={"Access-Control-Request-Method": "POST"},
        )
        # With a valid key even: the page of another origin gets nothing done.
        started = browser.post("/start", json={})
        offered = browser.post("/api/offer", json={"sdp": OFFER_SDP})
    for reply in (preflight, started, offered):
        code, message = _error(reply, 403)
        assert code == "origin_not_allowed"
        assert message == "pages from https://evil.example may not call this API"
        assert "access-control-allow-origin" not in reply.headers
    assert _spawner_state(system) == before


def test_cors_the_page_signaling_serves_is_same_origin(system: System) -> None:
    with _client(system, Origin=system.url) as page:
        reply = page.post("/start", json={})
    assert reply.status_code == 200
    assert "access-control-allow-origin" not in reply.headers


# -- rate limit ---------------------------------------------------------------------------


def test_rate_limit_per_client_address(system: System) -> None:
    address = "203.0.113.50"
    with _client(system, key=None, **{"X-Forwarded-For": address}) as client:
        # Unauthenticated requests spend the bucket too: guessing keys is limited.
        spent = [client.post("/start", json={}).status_code for _ in range(BURST)]
        before = _spawner_state(system)
        limited = client.post("/start", json={}, headers=_bearer(KEY_A))
        # Only the last X-Forwarded-For entry (the proxy's) counts: no escape by prepending.
        spoofed = client.post(
            "/api/offer",
            json={"sdp": OFFER_SDP},
            headers={"X-Forwarded-For": f"10.9.8.7, {address}", **_bearer(KEY_A)},
        )
        after = _spawner_state(system)
    assert spent == [401] * BURST
    for reply in (limited, spoofed):
        code, message = _error(reply, 429)
        assert code == "rate_limited"
        assert message.startswith("too many requests from this client; retry in ")
        assert 1 <= int(reply.headers["retry-after"]) <= 10
    assert after == before
    # Another client is not affected.
    with _client(system) as neighbour:
        assert neighbour.post("/start", json={}).status_code == 200


# -- bodies -------------------------------------------------------------------------------


def test_bodies_are_bounded_and_typed(system: System) -> None:
    session = _start(system)["sessionId"]
    path = f"/sessions/{session}/api/offer"
    before = _spawner_state(system)
    with _client(system) as client:
        too_large = client.post(path, content=b"{" + b" " * 300_000 + b"}")
        not_json = client.post(path, content=b"sdp=x", headers={"Content-Type": "text/plain"})
        nan = client.post(path, content=b'{"sdp": NaN}', headers={"Content-Type": "text/json"})
        deep = client.post(path, json={"sdp": OFFER_SDP, "request_data": _nested(40)})
        surrogate = client.post(
            path, content=b'{"sdp": "\\ud800"}', headers={"Content-Type": "application/json"}
        )
        session_id = client.get("/api/sessions/..%2F..%2Fstatus")
        bad_id = client.get("/api/sessions/a.b")
    assert _error(too_large, 413) == ("body_too_large", "request body exceeds 262144 bytes")
    assert _error(not_json, 415)[0] == "unsupported_media_type"
    assert _error(nan, 400)[1] == "body is not valid JSON: NaN is not valid JSON"
    assert _error(deep, 400)[1] == "body nests deeper than 32 levels"
    assert _error(surrogate, 400)[1] == (
        "body is not valid JSON text: a string has a lone surrogate"
    )
    assert _error(session_id, 404)[0] == "not_found"
    assert _error(bad_id, 400)[1] == (
        "malformed session id: expected 1 to 64 letters, digits, '-' or '_'"
    )
    assert _spawner_state(system) == before


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# -- per-key call cap (last: the only test here that takes a bot) --------------------------


async def test_per_key_cap_on_concurrent_calls(system: System) -> None:
    headers = {**_bearer(KEY_A), "X-Forwarded-For": "203.0.113.80"}
    early = await asyncio.to_thread(_start, system)  # a session started before the call
    options = CallOptions(
        url=system.url, wav=FIXTURES / "hello.wav", headers=headers, max_seconds=12.0
    )
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(run_call(options))
        await asyncio.to_thread(
            system.wait_until, lambda: system.status()["active_calls"] == 1, 20, "the call is live"
        )
        async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
            start_a = await client.post("/start", json={}, headers=_addressed(KEY_A))
            offer_a = await client.post(
                f"/sessions/{early['sessionId']}/api/offer",
                json={"sdp": OFFER_SDP, "type": "offer"},
                headers=_addressed(KEY_A),
            )
            start_b = await client.post("/start", json={}, headers=_addressed(KEY_B))
        result = await call
    await asyncio.to_thread(
        system.wait_until, lambda: system.status()["active_calls"] == 0, 20, "the call ended"
    )
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        again = await client.post("/start", json={}, headers=_addressed(KEY_A))
    await asyncio.to_thread(
        system.wait_until, lambda: system.status()["pool"]["idle"] >= 1, 30, "pool refilled"
    )

    assert result.session_id and result.voiced_s > 0
    for reply in (start_a, offer_a):
        code, message = _error(reply, 429)
        assert code == "too_many_calls"
        assert message == (
            "this API key already has 1 live calls, the most allowed "
            "(VOICEBOTS_MAX_CALLS_PER_KEY=1)"
        )
        assert int(reply.headers["retry-after"]) >= 1
    assert start_b.status_code == 200  # the cap is per key
    assert again.status_code == 200  # and frees up when the call ends

    # The ended call's record is its key's (or its token's) alone.
    ended = f"/api/sessions/{result.session_id}"
    async with httpx.AsyncClient(base_url=system.url, timeout=10) as client:
        own = await client.get(ended, headers=_addressed(KEY_A))
        other = await client.get(ended, headers=_addressed(KEY_B))
        hangup_other = await client.delete(ended, headers=_addressed(KEY_B))
    assert own.status_code == 200 and own.json()["status"] == "completed", own.text
    assert own.json()["transcript"]
    for reply in (other, hangup_other):
        assert _error(reply, 404) == ("unknown_session", f"no session {result.session_id}")


def _addressed(key: str) -> dict[str, str]:
    return {**_bearer(key), "X-Forwarded-For": next(_addresses)}
