"""The edge's building blocks: settings, token bucket, client address, and the open mode."""

from __future__ import annotations

import string
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request

from benchmarks.harness import base_env, free_port, stop_process, wait_until
from signaling.auth import SessionTokens, TokenError, owner_id
from signaling.config import SecurityConfig
from signaling.ratelimit import RateLimiter, client_address
from tests import ROOT

KEY = "k3y-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- settings -----------------------------------------------------------------------------


def test_without_keys_everything_is_open() -> None:
    config = SecurityConfig.from_env({})
    assert not config.auth_enabled
    assert config.allowed_origins == ("*",)
    assert config.describe().startswith("auth is OFF: VOICEBOTS_API_KEYS is not set")


def test_with_keys_no_other_origin_unless_listed() -> None:
    config = SecurityConfig.from_env({"VOICEBOTS_API_KEYS": KEY})
    assert config.auth_enabled and config.allowed_origins == ()
    listed = SecurityConfig.from_env(
        {"VOICEBOTS_API_KEYS": KEY, "VOICEBOTS_ALLOWED_ORIGINS": "https://A.example.com/"}
    )
    assert listed.allowed_origins == ("https://a.example.com",)


def test_the_token_secret_is_derived_from_the_keys_in_any_order() -> None:
    one = SecurityConfig.from_env({"VOICEBOTS_API_KEYS": f"{KEY},{KEY[::-1]}"})
    two = SecurityConfig.from_env({"VOICEBOTS_API_KEYS": f" {KEY[::-1]} , {KEY}"})
    other = SecurityConfig.from_env({"VOICEBOTS_API_KEYS": KEY})
    assert one.token_secret == two.token_secret != other.token_secret
    assert len(one.token_secret) == 32 and KEY.encode() not in one.token_secret


def test_tokens_outlast_the_longest_call_and_bursts_are_a_third_of_the_rate() -> None:
    default = SecurityConfig.from_env({})
    assert (default.token_ttl, default.rate_limit, default.rate_burst) == (1200.0, 60.0, 20)
    assert default == SecurityConfig()
    config = SecurityConfig.from_env(
        {"VOICEBOTS_MAX_CALL_SECONDS": "60", "VOICEBOTS_RATE_LIMIT": "2"}
    )
    assert (config.token_ttl, config.rate_limit, config.rate_burst) == (360.0, 2.0, 1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"VOICEBOTS_API_KEYS": f"{KEY},short-key"},
            "VOICEBOTS_API_KEYS: key 2 has 9 characters; each key needs at least 16",
        ),
        ({"VOICEBOTS_METRICS_TOKEN": "tiny"}, "VOICEBOTS_METRICS_TOKEN has 4 characters"),
        (
            {"VOICEBOTS_ALLOWED_ORIGINS": "https://a.example.com/page"},
            "VOICEBOTS_ALLOWED_ORIGINS entries must be origins like https://app.example.com",
        ),
        ({"VOICEBOTS_MAX_CALL_SECONDS": "0"}, "VOICEBOTS_MAX_CALL_SECONDS must be >= 1.0"),
        ({"VOICEBOTS_TRUST_PROXY": "maybe"}, "VOICEBOTS_TRUST_PROXY must be a boolean"),
    ],
)
def test_bad_settings_name_the_variable_not_the_secret(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        SecurityConfig.from_env(env)
    assert str(caught.value).startswith(message)
    assert "short-key" not in str(caught.value) and "tiny" not in str(caught.value)


def test_secrets_stay_out_of_reprs_and_descriptions() -> None:
    config = SecurityConfig.from_env(
        {"VOICEBOTS_API_KEYS": KEY, "VOICEBOTS_METRICS_TOKEN": "t" * 20}
    )
    for text in (repr(config), config.describe()):
        assert KEY not in text and "t" * 20 not in text
        assert config.token_secret.hex() not in text
    assert KEY not in owner_id(KEY) and len(owner_id(KEY)) == 24


# -- session tokens -----------------------------------------------------------------------


def test_session_tokens() -> None:
    clock = Clock()
    tokens = SessionTokens(b"x" * 32, ttl=60, clock=clock)
    token, expires = tokens.issue("abc")
    assert expires == 1060 and token.startswith("vbs1.")
    tokens.verify(token, "abc")
    with pytest.raises(TokenError, match=r"^session token is for another session$"):
        tokens.verify(token, "abd")
    prefix, payload, mac = token.split(".")
    # A payload edited to name another session (or a later expiry) no longer matches its MAC.
    edited = SessionTokens(b"y" * 32, ttl=6000, clock=clock).issue("abd")[0].split(".")[1]
    for bad in (f"{prefix}.{edited}.{mac}", f"{prefix}.{payload}", "vbs2.a.b", "", "vbs1..."):
        with pytest.raises(TokenError, match=r"^invalid API key or session token$"):
            tokens.verify(bad, "abc")
    clock.now = 1060
    with pytest.raises(TokenError, match=r"^session token has expired"):
        tokens.verify(token, "abc")


def test_a_session_token_has_one_spelling_only() -> None:
    tokens = SessionTokens(b"x" * 32, ttl=60, clock=Clock())
    token, _expires = tokens.issue("abc")
    prefix, payload, mac = token.split(".")
    # 32 MAC bytes in 43 base64 characters: the last one carries 2 bits and 4 unused ones.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    high = alphabet.index(mac[-1]) & 0b110000
    respelled = [alphabet[high | low] for low in range(16) if alphabet[high | low] != mac[-1]]
    assert len(respelled) == 15
    for last in respelled:
        # The same MAC bytes once decoded, yet not the token that was issued.
        with pytest.raises(TokenError, match=r"^invalid API key or session token$"):
            tokens.verify(f"{prefix}.{payload}.{mac[:-1]}{last}", "abc")
    tokens.verify(token, "abc")


# -- rate limit ---------------------------------------------------------------------------


def test_token_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") is None  # buckets are per client
    clock.now += 0.5
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("a") is None
    # After burst / rate seconds a bucket is full again, the same as none: it is forgotten.
    clock.now += 3.0
    limiter.take("c")
    assert len(limiter) == 1


def test_token_bucket_memory_is_bounded() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=Clock(), max_clients=100)
    for n in range(1000):
        limiter.take(f"client-{n}")
    assert len(limiter) == 100


def _request(client: str, forwarded: list[str] | None = None) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    return Request({"type": "http", "headers": headers, "client": (client, 40000)})


def test_client_address_trusts_x_forwarded_for_only_behind_a_proxy() -> None:
    spoofed = _request("10.0.0.2", ["6.6.6.6"])
    assert client_address(spoofed, trust_proxy=False) == "10.0.0.2"
    # The proxy appends what it saw; whatever the client put before that is ignored.
    proxied = _request("10.0.0.2", ["6.6.6.6, 198.51.100.7"])
    assert client_address(proxied, trust_proxy=True) == "198.51.100.7"
    two_headers = _request("10.0.0.2", ["6.6.6.6", "198.51.100.8"])
    assert client_address(two_headers, trust_proxy=True) == "198.51.100.8"
    assert client_address(_request("10.0.0.2"), trust_proxy=True) == "10.0.0.2"
    # An IPv6 host holds a /64; IPv4-mapped addresses are their IPv4 address.
    assert client_address(_request("2001:db8:1:2:3:4:5:6"), False) == "2001:db8:1:2::/64"
    assert client_address(_request("::ffff:192.0.2.1"), False) == "192.0.2.1"


# -- open mode ----------------------------------------------------------------------------


@pytest.fixture()
def open_signaling(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Signaling alone, no keys, its spawner address pointing at nothing."""
    port, log = free_port(), tmp_path / "signaling.log"
    env = base_env("redis://127.0.0.1:1/0")
    env.update(
        {"VOICEBOTS_PORT": str(port), "VOICEBOTS_SPAWNER_URL": f"http://127.0.0.1:{free_port()}"}
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "voicebots", "signaling"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 30, "signaling")
        yield url, log
    finally:
        stop_process(process)


def test_without_keys_the_api_is_open_and_the_log_says_so(
    open_signaling: tuple[str, Path],
) -> None:
    url, log = open_signaling
    with httpx.Client(base_url=url) as client:
        # Past auth: refused only because there is no spawner to create the session.
        started = client.post("/start", json={})
        preflight = client.options(
            "/start",
            headers={"Origin": "https://any.example", "Access-Control-Request-Method": "POST"},
        )
    assert started.status_code == 503
    assert started.json()["error"]["code"] == "spawner_unavailable"
    assert "token" not in started.text
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "auth is OFF: VOICEBOTS_API_KEYS is not set" in log.read_text()
