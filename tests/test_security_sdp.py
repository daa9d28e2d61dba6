"""Offers and trickled candidates are checked before any bot sees them, with precise messages."""

from __future__ import annotations

from typing import Any

import pytest

from common.contract import (
    MAX_SDP_BYTES,
    MAX_SDP_LINES,
    CandidatesRequest,
    OfferRequest,
    check_offer_sdp,
)

FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)

#: The lines of a minimal browser-like audio offer (what the page and pipecat-client-js send).
OFFER_LINES = (
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    f"a=fingerprint:{FINGERPRINT}",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtpmap:111 opus/48000/2",
)
OFFER_SDP = "\r\n".join(OFFER_LINES) + "\r\n"

CHROME_CANDIDATE = (
    "candidate:842163049 1 udp 1677729535 203.0.113.7 51732 typ srflx raddr 0.0.0.0 rport 0 "
    "generation 0 ufrag sXTb network-cost 999"
)


def _without(*prefixes: str) -> str:
    return "\r\n".join(ln for ln in OFFER_LINES if not ln.startswith(prefixes)) + "\r\n"


def _replace(prefix: str, line: str) -> str:
    return "\r\n".join(line if ln.startswith(prefix) else ln for ln in OFFER_LINES) + "\r\n"


def test_a_browser_offer_passes() -> None:
    parsed = OfferRequest.parse(
        {"sdp": OFFER_SDP, "type": "offer", "pc_id": None, "restart_pc": False}
    )
    assert parsed.sdp == OFFER_SDP and parsed.pc_id is None
    # Session-level credentials (Firefox puts them there) count for the audio section too.
    session_level = OFFER_SDP.replace("t=0 0\r\n", f"t=0 0\r\na=fingerprint:{FINGERPRINT}\r\n")
    check_offer_sdp(session_level.replace(f"a=fingerprint:{FINGERPRINT}\r\na=setup", "a=setup"))
    # LF line ends are tolerated, as aiortc does.
    check_offer_sdp(OFFER_SDP.replace("\r\n", "\n"))


def test_the_official_client_fields_pass() -> None:
    # @pipecat-ai/small-webrtc-transport: sdp, type, pc_id, restart_pc, requestData.
    parsed = OfferRequest.parse(
        {
            "sdp": OFFER_SDP,
            "type": "offer",
            "pc_id": "SmallWebRTCConnection#0-abc",
            "restart_pc": True,
            "requestData": {"x": 1},
        }
    )
    assert parsed.request_data == {"x": 1} and parsed.restart_pc


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        (None, "'sdp' must be a non-empty string"),
        ("  ", "'sdp' must be a non-empty string"),
        ("x" * (MAX_SDP_BYTES + 1), f"'sdp' exceeds {MAX_SDP_BYTES} bytes"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "'sdp' is not an SDP session description"),
        (
            "v=0\r\n" + "a=x\r\n" * MAX_SDP_LINES,
            f"'sdp' has {MAX_SDP_LINES + 1} lines; at most {MAX_SDP_LINES} are accepted",
        ),
        (OFFER_SDP.replace("s=-", "s=\x00"), "'sdp' line 3 contains a control character"),
        (OFFER_SDP.replace("s=-", "hello"), "'sdp' line 3 is not of the form '<letter>=<value>'"),
        (
            _replace("m=audio", "m=audio nine RTP 111"),
            "'sdp' line 6 is a malformed m-line (expected 'm=<media> <port> <proto> <formats>')",
        ),
        (
            _replace("m=audio", "m=video 9 UDP/TLS/RTP/SAVPF 96"),
            "'sdp' has no audio m-line",
        ),
        (
            _without("a=ice-ufrag"),
            "'sdp' has no ICE username fragment (a=ice-ufrag) for its audio m-line",
        ),
        (_without("a=ice-pwd"), "'sdp' has no ICE password (a=ice-pwd) for its audio m-line"),
        (
            _without("a=fingerprint"),
            "'sdp' has no DTLS fingerprint (a=fingerprint) for its audio m-line",
        ),
        (
            _replace("a=ice-ufrag", "a=ice-ufrag:ab"),
            "'sdp' a=ice-ufrag must be 4 to 256 characters from A-Z a-z 0-9 + /",
        ),
        (
            _replace("a=ice-pwd", "a=ice-pwd:short"),
            "'sdp' a=ice-pwd must be 22 to 256 characters from A-Z a-z 0-9 + /",
        ),
        (
            _replace("a=fingerprint", "a=fingerprint:sha-256 nothex"),
            "'sdp' has a malformed a=fingerprint (expected '<hash> <hex pairs>', "
            "e.g. 'sha-256 AB:CD:...')",
        ),
        (OFFER_SDP + "a=x:\ud800", "'sdp' is not valid Unicode text (it has a lone surrogate)"),
    ],
)
def test_bad_offers_are_refused_with_the_reason(sdp: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        OfferRequest.parse({"sdp": sdp, "type": "offer"})
    assert str(caught.value).startswith(message)


def test_the_sdp_of_a_data_channel_only_offer_is_refused() -> None:
    data_only = _replace("m=audio", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel")
    with pytest.raises(ValueError, match=r"^'sdp' has no audio m-line$"):
        check_offer_sdp(data_only)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sdp": OFFER_SDP, "type": "answer"}, "'type' must be 'offer', got 'answer'"),
        ({"sdp": OFFER_SDP, "pc_id": 7}, "'pc_id' must be a non-empty string of at most 256"),
        ({"sdp": OFFER_SDP, "pc_id": "x" * 257}, "'pc_id' must be a non-empty string"),
        ({"sdp": OFFER_SDP, "restart_pc": "yes"}, "'restart_pc' must be a boolean"),
        ([OFFER_SDP], "offer body must be a JSON object"),
    ],
)
def test_bad_offer_fields(body: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        OfferRequest.parse(body)
    assert str(caught.value).startswith(message)


def test_browser_candidates_pass() -> None:
    firefox = "candidate:0 1 UDP 2122252543 192.168.1.2 49203 typ host"
    mdns = "candidate:1 1 udp 2113937151 2f1b8c0e-1c1a-4e7e-8a0d-5c1b2b3c4d5e.local 5000 typ host"
    tcp = "candidate:3 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active"
    parsed = CandidatesRequest.parse(
        {
            "pc_id": "pc",
            "candidates": [
                {"candidate": CHROME_CANDIDATE, "sdp_mid": "0", "sdp_mline_index": 0},
                {"candidate": firefox, "sdpMid": "0", "sdpMLineIndex": 0},
                {"candidate": mdns.removeprefix("candidate:")},
                {"candidate": tcp},
                {"candidate": "", "sdp_mid": "0"},  # end of candidates
            ],
        }
    )
    assert len(parsed.candidates) == 5


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ("candidate:   ", "candidates[0].candidate is empty"),
        (
            "candidate:1 1 udp 1 1.2.3.4 5000",
            "candidates[0].candidate is not an ICE candidate (expected '<foundation> <component> "
            "<transport> <priority> <address> <port> typ <type> ...')",
        ),
        ("1 0 udp 1 1.2.3.4 5000 typ host", "candidates[0].candidate has component 0"),
        ("1 1 sctp 1 1.2.3.4 5000 typ host", "candidates[0].candidate has transport 'sctp'"),
        ("1 1 udp 1 1.2.3.4 70000 typ host", "candidates[0].candidate has port 70000"),
        ("1 1 udp 1 1.2.3.4 5000 typ peer", "candidates[0].candidate has type 'peer'"),
        ("1 1 udp 1 1.2.3.4 5000 typ host raddr", "candidates[0].candidate is not an ICE"),
        ("1 1 udp 1 1.2.3.4<script> 5000 typ host", "candidates[0].candidate is not an ICE"),
        (
            "1 1 udp 1 1.2.3.4 \u0665\u0660\u0660\u0660 typ host",
            "candidates[0].candidate is not an ICE",
        ),
    ],
)
def test_bad_candidates_are_refused_with_the_reason(candidate: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        CandidatesRequest.parse({"pc_id": "pc", "candidates": [{"candidate": candidate}]})
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"candidates": []}, "'pc_id' must be a non-empty string"),
        ({"pc_id": "pc", "candidates": {}}, "'candidates' must be a list"),
        ({"pc_id": "pc", "candidates": [{}] * 65}, "at most 64 candidates per request"),
        ({"pc_id": "pc", "candidates": ["x"]}, "candidates[0] must be a JSON object"),
        (
            {"pc_id": "pc", "candidates": [{"candidate": "", "sdp_mline_index": True}]},
            "candidates[0].sdp_mline_index must be an integer from 0 to 1023",
        ),
        (
            {"pc_id": "pc", "candidates": [{"candidate": "", "sdp_mid": 0}]},
            "candidates[0].sdp_mid must be a string (<= 256)",
        ),
    ],
)
def test_bad_candidate_bodies(body: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        CandidatesRequest.parse(body)
    assert str(caught.value).startswith(message)
