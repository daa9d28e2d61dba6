"""Fuzzing the running signaling: hypothesis over offers, candidates, /start bodies and
credentials, and schemathesis over the OpenAPI description it serves.

Every case must get a clean reply — JSON (the Prometheus text aside), a 2xx or 4xx, an
``{"error": {"code", "message"}}`` body with every 4xx — and, where the local parsers can
tell, exactly the error they give: the server's checks and ``common.contract`` are the same
code, and a body that passes them must have reached the spawner (which then refuses it for
naming no live session or peer connection). No case may take a bot: the pool's idle count
is the same at the end, and neither process logs a traceback or an error.

Case counts are bounded (``EXAMPLES``) so the module runs in well under a minute; they are printed
at the end (``pytest -s``).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from benchmarks.harness import Redis, System, run_system
from common.contract import CandidatesRequest, OfferRequest
from signaling.openapi import openapi_document
from tests.test_security_sdp import CHROME_CANDIDATE, OFFER_LINES

KEY = "fuzz-key-0c6e2b9a7d3f1458"
AUTH = {"Authorization": f"Bearer {KEY}"}
UNKNOWN = "0" * 32  # a well-formed session id the spawner does not know
EXAMPLES = {"offers": 600, "implicit": 200, "candidates": 400, "start": 200, "auth": 200}
SCHEMA_EXAMPLES = 100  # per operation and generation mode
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
cases: Counter[str] = Counter()


@pytest.fixture(scope="module")
def system(redis_server: Redis) -> Iterator[System]:
    env = {"VOICEBOTS_API_KEYS": KEY, "VOICEBOTS_RATE_LIMIT": "0"}
    with run_system(redis_server, env, min_idle=1, max_bots=2) as running:
        idle = running.status()["pool"]["idle"]
        yield running
        after = running.status()
        logs = {name: running.log(name) for name in ("signaling", "spawner")}
    print(f"\nfuzz cases: {dict(cases)}, {sum(cases.values())} in all")
    assert after["pool"]["idle"] == idle, "a fuzz case took a bot"
    assert after["active_calls"] == 0
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name} logged a traceback:\n{text[-4000:]}"
        assert '"level": "ERROR"' not in text, f"{name} logged an error:\n{text[-4000:]}"


@pytest.fixture(scope="module")
def http(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.url, headers=AUTH, timeout=10) as client:
        yield client


def _clean(reply: httpx.Response) -> Any:
    """The JSON body of a reply that is a 2xx or a 4xx in the API's error shape."""
    return _clean_parts(reply.status_code, reply.headers.get("content-type", ""), reply.content)


def _clean_parts(status: int, content_type: str, content: bytes) -> Any:
    assert 200 <= status < 300 or 400 <= status < 500, (status, content[:500])
    assert content_type == "application/json", (status, content_type)
    body = json.loads(content)
    if status >= 400:
        error = body["error"]
        assert isinstance(error["code"], str) and error["code"]
        assert isinstance(error["message"], str)
    return body


def _send(http: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    """``body`` as JSON, ``null`` included (``json=None`` would send no body at all)."""
    content = json.dumps(body).encode()
    return http.request(method, path, content=content, headers={"Content-Type": "application/json"})


def _refusal(reply: httpx.Response) -> tuple[int, str, str]:
    body = _clean(reply)
    assert reply.status_code >= 400, reply.text
    return reply.status_code, body["error"]["code"], body["error"]["message"]


# -- strategies ---------------------------------------------------------------------------

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_token = st.text(alphabet=string.ascii_letters + string.digits + "+/:-. ", max_size=40)


@st.composite
def sdps(draw: st.DrawFn) -> str:
    """Browser-like offers, whole or mangled: lines dropped, repeated, edited or invented."""
    lines = list(OFFER_LINES)
    for _ in range(draw(st.integers(0, 4))):
        index = draw(st.integers(0, len(lines)))
        action = draw(st.sampled_from(["drop", "repeat", "edit", "insert", "value"]))
        if action == "drop" and lines:
            lines.pop(min(index, len(lines) - 1))
        elif action == "repeat" and lines:
            lines.insert(index, lines[min(index, len(lines) - 1)])
        elif action == "edit" and lines:
            at = min(index, len(lines) - 1)
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))] + draw(_token)
        elif action == "value" and lines:
            at = min(index, len(lines) - 1)
            head, _, _ = lines[at].partition(":")
            lines[at] = f"{head}:{draw(_token)}"
        else:
            lines.insert(index, draw(st.text(max_size=30)))
    end = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    return end.join(lines) + draw(st.sampled_from([end, ""]))


offer_bodies = st.fixed_dictionaries(
    {"sdp": sdps() | st.text(max_size=200) | json_values},
    optional={
        "type": st.sampled_from(["offer", "answer", "pranswer"]) | json_values,
        "pc_id": st.none() | st.text(max_size=20) | json_values,
        "restart_pc": st.booleans() | json_values,
        "request_data": json_values,
        "requestData": json_values,
    },
)


@st.composite
def candidate_texts(draw: st.DrawFn) -> str:
    words = CHROME_CANDIDATE.split(" ")
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(words) - 1))
        words[index] = draw(_token | st.integers(-5, 100_000).map(str))
    return " ".join(words)


candidates = st.fixed_dictionaries(
    {},
    optional={
        "candidate": candidate_texts() | st.just("") | st.text(max_size=60) | json_values,
        "sdp_mid": st.none() | st.sampled_from(["0", "1", "audio"]) | json_values,
        "sdp_mline_index": st.none() | st.integers(-2, 2000) | json_values,
        "sdpMid": st.text(max_size=5),
        "sdpMLineIndex": st.integers(-1, 3),
    },
)
candidate_bodies = st.fixed_dictionaries(
    {},
    optional={
        "pc_id": st.text(max_size=20) | json_values,
        "candidates": st.lists(candidates | json_values, max_size=5) | json_values,
    },
)


def _local_error(parse: Any, body: Any) -> str | None:
    try:
        parse(body)
    except ValueError as exc:
        return str(exc)
    return None


# -- hypothesis over the running server ---------------------------------------------------


def test_fuzz_offers(http: httpx.Client) -> None:
    @settings(FUZZ, max_examples=EXAMPLES["offers"])
    @given(body=offer_bodies)
    def case(body: dict[str, Any]) -> None:
        cases["offers"] += 1
        reply = _send(http, "POST", f"/sessions/{UNKNOWN}/api/offer", body)
        expected = _local_error(OfferRequest.parse, body)
        if expected is None:  # a valid offer: only the session is missing
            assert _refusal(reply)[:2] == (404, "unknown_session")
        else:
            assert _refusal(reply) == (400, "bad_request", expected)

    case()


def test_fuzz_implicit_offers(http: httpx.Client) -> None:
    # POST /api/offer with a valid offer would take a bot: only invalid ones are sent here.
    invalid = (offer_bodies | json_values).filter(lambda b: _local_error(OfferRequest.parse, b))

    @settings(FUZZ, max_examples=EXAMPLES["implicit"])
    @given(body=invalid)
    def case(body: Any) -> None:
        cases["implicit offers"] += 1
        reply = _send(http, "POST", "/api/offer", body)
        assert _refusal(reply) == (400, "bad_request", _local_error(OfferRequest.parse, body))

    case()


def test_fuzz_candidates(http: httpx.Client) -> None:
    @settings(FUZZ, max_examples=EXAMPLES["candidates"])
    @given(body=candidate_bodies, implicit=st.booleans())
    def case(body: dict[str, Any], implicit: bool) -> None:
        cases["candidates"] += 1
        path = "/api/offer" if implicit else f"/sessions/{UNKNOWN}/api/offer"
        reply = _send(http, "PATCH", path, body)
        expected = _local_error(CandidatesRequest.parse, body)
        if expected is None:
            assert _refusal(reply)[:2] == (404, "unknown_pc")
        else:
            assert _refusal(reply) == (400, "bad_request", expected)

    case()


_content_types = st.sampled_from(
    [None, "application/json", "application/json; charset=utf-8", "text/plain", "text/json"]
)


def test_fuzz_start_bodies(http: httpx.Client) -> None:
    raw = st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
    nested = st.integers(1, 60).map(lambda n: b"[" * n + b"]" * n)

    @settings(FUZZ, max_examples=EXAMPLES["start"])
    @given(body=raw | nested, content_type=_content_types)
    def case(body: bytes, content_type: str | None) -> None:
        cases["start bodies"] += 1
        headers = {"Content-Type": content_type} if content_type else {}
        reply = http.post("/start", content=body, headers=headers)
        data = _clean(reply)
        assert reply.status_code in (200, 400, 415), reply.text
        if reply.status_code == 200:
            assert data["sessionId"] and data["token"].startswith("vbs1.")

    case()


def test_fuzz_credentials(system: System, http: httpx.Client) -> None:
    started = _clean(http.post("/start", json={}))
    session, token = started["sessionId"], started["token"]
    printable = string.ascii_letters + string.digits + string.punctuation + " "
    mangled = st.builds(
        lambda at, char: token[:at] + char + token[at + 1 :],
        st.integers(0, len(token) - 1),
        st.sampled_from(string.ascii_letters + string.digits + "-_."),
    ).filter(lambda t: t != token)
    credential = st.text(alphabet=printable, max_size=80) | mangled | _token.map("vbs1.".__add__)
    # Stripped: HTTP itself (h11, on both sides) refuses values with outer whitespace.
    header = st.one_of(
        credential.map("Bearer ".__add__),
        credential.map("bearer  ".__add__),
        credential,
        st.just("Bearer"),
    ).map(str.strip)

    @settings(FUZZ, max_examples=EXAMPLES["auth"])
    @given(authorization=header, method=st.sampled_from(["GET", "DELETE", "PATCH", "POST"]))
    def case(authorization: str, method: str) -> None:
        cases["credentials"] += 1
        path = (
            f"/api/sessions/{session}"
            if method in ("GET", "DELETE")
            else f"/sessions/{session}/api/offer"
        )
        with httpx.Client(base_url=system.url, timeout=10) as anonymous:
            reply = anonymous.request(
                method, path, headers={"Authorization": authorization}, json={}
            )
        assert _refusal(reply)[:2] == (401, "unauthorized")

    case()
    # None of that touched the session.
    assert _clean(http.get(f"/api/sessions/{session}"))["status"] == "pending"


# -- schemathesis over /openapi.json ------------------------------------------------------


#: Refusals of schema-violating requests: the default list, plus 413 for oversized bodies.
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


@pytest.fixture(scope="module")
def api_schema(system: System) -> schemathesis.BaseSchema:
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REFUSED}}}
    )
    return schemathesis.openapi.from_url(f"{system.url}/openapi.json", config=config)


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """Every operation in positive mode; those with inputs also in negative mode."""
    found = []
    for path, methods in openapi_document()["paths"].items():
        for method, operation in methods.items():
            found.append((path, method.upper(), GenerationMode.POSITIVE))
            if "parameters" in operation or "requestBody" in operation:
                found.append((path, method.upper(), GenerationMode.NEGATIVE))
    return found


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize(("path", "method", "mode"), _operations())
def test_fuzz_openapi(
    system: System,
    api_schema: schemathesis.BaseSchema,
    path: str,
    method: str,
    mode: GenerationMode,
) -> None:
    operation = api_schema[path][method]
    extra = negative_data_rejection if mode is GenerationMode.NEGATIVE else ignored_auth

    @settings(FUZZ, max_examples=SCHEMA_EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        cases[f"openapi {mode.value}"] += 1
        response = case.call(base_url=system.url, headers=AUTH)
        case.validate_response(response, checks=[*CHECKS, extra])
        if path != "/metrics":
            content_type = response.headers.get("content-type", [""])[0]
            _clean_parts(response.status_code, content_type, response.content)

    run()
