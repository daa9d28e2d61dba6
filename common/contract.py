"""What signaling and the spawner agree on: the offer/answer and trickle-ICE messages of the
public contract, parsed and checked, and the header that names a call's owner.

Signaling (the public edge) and the spawner's control API import this and nothing of each
other. Parsers raise ``ValueError`` with a precise message; the HTTP layer turns it into a 400.

An offer is checked before any bot sees it: an SDP session description of sane size, with an
audio m-line whose ICE credentials (``a=ice-ufrag``, ``a=ice-pwd``) and DTLS fingerprint
(``a=fingerprint``) are present, at the session level or in that section, as every WebRTC
offer has them. Trickled candidates must have the shape of RFC 8839's ``candidate`` attribute,
which is what the bot's parser (aiortc's) reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_CANDIDATES",
    "MAX_SDP_BYTES",
    "MAX_SDP_LINES",
    "OWNER_HEADER",
    "Candidate",
    "CandidatesRequest",
    "OfferRequest",
    "check_candidate",
    "check_offer_sdp",
]

#: Signaling → spawner: the caller a session belongs to (the per-key call cap counts by it).
OWNER_HEADER = "voicebots-owner"
MAX_SDP_BYTES = 64 * 1024
#: A browser's audio + data channel offer has ~60 lines; with every candidate inline ~100.
MAX_SDP_LINES = 1000
MAX_CANDIDATES = 64
MAX_CANDIDATE_CHARS = 1024
MAX_ID_CHARS = 256

# Control characters other than the line end (tab is allowed), as bytes and as a regex class.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])
_CONTROL_CLASS = r"[\x00-\x08\x0b-\x1f\x7f]"
_CONTROL = re.compile(_CONTROL_CLASS)
# A line (after the first) that does not start "<letter>=".
_NOT_A_LINE = re.compile(r"\n(?![a-z]=)")
# Either of the two: where the first line that is not an SDP line is.
_BAD_LINE = re.compile(r"^(?![a-z]=)|" + _CONTROL_CLASS, re.MULTILINE)
_M_LINE_START = re.compile(r"^m=", re.MULTILINE)
_M_LINE = re.compile(r"m=(?P<media>[a-z]+) \d+(?:/\d+)? \S+(?: \S+)+", re.ASCII)
# RFC 8839: ice-char = ALPHA / DIGIT / "+" / "/"; ufrag 4-256 of them, pwd 22-256.
_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")
# RFC 8122: hash function token, then the digest as colon-separated upper/lower hex pairs.
_FINGERPRINT = re.compile(
    r"(?:sha-1|sha-224|sha-256|sha-384|sha-512|md5|md2) [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+",
    re.IGNORECASE,
)
_CANDIDATE = re.compile(
    r"(?P<foundation>[A-Za-z0-9+/]{1,32}) (?P<component>\d{1,3}) (?P<transport>[A-Za-z]+) "
    r"(?P<priority>\d{1,10}) (?P<address>[0-9A-Za-z.:%_\[\]-]{1,255}) (?P<port>\d{1,5}) "
    r"typ (?P<type>[a-z]+)"
    r"(?P<extensions>(?: [\x21-\x7e]+ [\x21-\x7e]+)*)",
    re.ASCII,
)
_CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})
_CANDIDATE_SHAPE = (
    "'<foundation> <component> <transport> <priority> <address> <port> typ <type> ...'"
)


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    return data


def _optional_id(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise ValueError(f"'{key}' must be a non-empty string of at most {MAX_ID_CHARS} characters")
    return value


def check_offer_sdp(sdp: Any) -> str:
    """``sdp`` if it is an SDP offer a bot can answer; otherwise ``ValueError`` saying why.

    Both signaling and the spawner check each offer on its way to a bot, so the checks scan
    the whole text with a few regular expressions, which run in C, rather than each line in
    Python; a line is looked at on its own only to say what is wrong with it.
    """
    if not isinstance(sdp, str) or not sdp.strip():
        raise ValueError("'sdp' must be a non-empty string")
    try:
        size = len(sdp.encode())
    except UnicodeEncodeError:
        raise ValueError("'sdp' is not valid Unicode text (it has a lone surrogate)") from None
    if size > MAX_SDP_BYTES:
        raise ValueError(f"'sdp' exceeds {MAX_SDP_BYTES} bytes")
    if not sdp.startswith("v=0"):
        raise ValueError("'sdp' is not an SDP session description (must start with 'v=0')")
    text = sdp.replace("\r\n", "\n").rstrip("\n")
    count = text.count("\n") + 1
    if count > MAX_SDP_LINES:
        raise ValueError(f"'sdp' has {count} lines; at most {MAX_SDP_LINES} are accepted")
    encoded = text.encode()
    if len(encoded.translate(None, _CONTROL_BYTES)) != len(encoded) or _NOT_A_LINE.search(text):
        _explain_bad_line(text)
    # The session level, then each m-section with its m-line first.
    session, *sections = text.split("\nm=")
    media: list[str] = []
    for index, section in enumerate(sections):
        match = _M_LINE.fullmatch("m=" + section.partition("\n")[0])
        if match is None:
            number = _m_line_numbers(text)[index]
            raise ValueError(
                f"'sdp' line {number} is a malformed m-line "
                "(expected 'm=<media> <port> <proto> <formats>')"
            )
        media.append(match["media"])
    if "audio" not in media:
        raise ValueError("'sdp' has no audio m-line")
    # The first audio section carries the transport (with BUNDLE every section shares it).
    transport = session + "\n" + sections[media.index("audio")]
    _check_attribute(transport, "ice-ufrag", _UFRAG, "ICE username fragment", "4 to 256")
    _check_attribute(transport, "ice-pwd", _PWD, "ICE password", "22 to 256")
    fingerprints = _attribute_values(transport, "fingerprint")
    if not fingerprints:
        raise ValueError("'sdp' has no DTLS fingerprint (a=fingerprint) for its audio m-line")
    for value in fingerprints:
        if not _FINGERPRINT.fullmatch(value.strip()):
            raise ValueError(
                "'sdp' has a malformed a=fingerprint (expected '<hash> <hex pairs>', "
                "e.g. 'sha-256 AB:CD:...')"
            )
    return sdp


def _explain_bad_line(text: str) -> None:
    """Raise what is wrong with the first line of ``text`` that is not an SDP line."""
    bad = _BAD_LINE.search(text)
    assert bad is not None
    at = bad.start()
    number = text.count("\n", 0, at) + 1
    begin = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    line = text[begin : len(text) if end < 0 else end]
    if _CONTROL.search(line):
        raise ValueError(f"'sdp' line {number} contains a control character")
    raise ValueError(f"'sdp' line {number} is not of the form '<letter>=<value>'")


def _m_line_numbers(text: str) -> list[int]:
    return [text.count("\n", 0, m.start()) + 1 for m in _M_LINE_START.finditer(text)]


def _attribute_values(text: str, name: str) -> list[str]:
    prefix = f"\na={name}:"
    values, at = [], text.find(prefix)
    while at >= 0:
        end = text.find("\n", at + 1)
        values.append(text[at + len(prefix) : len(text) if end < 0 else end])
        at = text.find(prefix, at + 1)
    return values


def _check_attribute(
    text: str, name: str, pattern: re.Pattern[str], what: str, length: str
) -> None:
    values = _attribute_values(text, name)
    if not values:
        raise ValueError(f"'sdp' has no {what} (a={name}) for its audio m-line")
    for value in values:
        if not pattern.fullmatch(value.strip()):
            raise ValueError(f"'sdp' a={name} must be {length} characters from A-Z a-z 0-9 + /")


def check_candidate(text: str, where: str) -> str:
    """An ICE candidate attribute (``candidate:`` prefix optional) in RFC 8839's shape."""
    body = text.removeprefix("candidate:").strip()
    if not body:
        raise ValueError(f"{where} is empty")
    match = _CANDIDATE.fullmatch(body)
    if match is None:
        raise ValueError(f"{where} is not an ICE candidate (expected {_CANDIDATE_SHAPE})")
    if not 1 <= int(match["component"]) <= 256:
        raise ValueError(f"{where} has component {match['component']}; expected 1 to 256")
    if match["transport"].lower() not in ("udp", "tcp"):
        raise ValueError(f"{where} has transport {match['transport']!r}; expected udp or tcp")
    if int(match["port"]) > 65535:
        raise ValueError(f"{where} has port {match['port']}; expected 0 to 65535")
    if match["type"] not in _CANDIDATE_TYPES:
        raise ValueError(
            f"{where} has type {match['type']!r}; expected host, srflx, prflx or relay"
        )
    return text


@dataclass(frozen=True)
class OfferRequest:
    sdp: str
    sdp_type: str = "offer"
    pc_id: str | None = None
    restart_pc: bool = False
    request_data: Any = None

    @classmethod
    def parse(cls, data: Any) -> OfferRequest:
        body = _object(data, "offer body")
        sdp = check_offer_sdp(body.get("sdp"))
        sdp_type = body.get("type", "offer")
        if sdp_type != "offer":
            raise ValueError(f"'type' must be 'offer', got {_show(sdp_type)}")
        pc_id = _optional_id(body, "pc_id")
        restart_pc = body.get("restart_pc") or False
        if not isinstance(restart_pc, bool):
            raise ValueError("'restart_pc' must be a boolean")
        request_data = body.get("request_data", body.get("requestData"))
        return cls(
            sdp=sdp,
            sdp_type="offer",
            pc_id=pc_id,
            restart_pc=restart_pc,
            request_data=request_data,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "sdp": self.sdp,
            "type": self.sdp_type,
            "pc_id": self.pc_id,
            "restart_pc": self.restart_pc,
            "request_data": self.request_data,
        }


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Candidate:
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate,
            "sdp_mid": self.sdp_mid,
            "sdp_mline_index": self.sdp_mline_index,
        }


@dataclass(frozen=True)
class CandidatesRequest:
    pc_id: str
    candidates: tuple[Candidate, ...]

    @classmethod
    def parse(cls, data: Any) -> CandidatesRequest:
        body = _object(data, "candidates body")
        pc_id = _optional_id(body, "pc_id")
        if pc_id is None:
            raise ValueError("'pc_id' must be a non-empty string")
        items = body.get("candidates")
        if not isinstance(items, list):
            raise ValueError("'candidates' must be a list")
        if len(items) > MAX_CANDIDATES:
            raise ValueError(f"at most {MAX_CANDIDATES} candidates per request")
        parsed = []
        for index, item in enumerate(items):
            where = f"candidates[{index}].candidate"
            entry = _object(item, f"candidates[{index}]")
            text = entry.get("candidate", "")
            if not isinstance(text, str) or len(text) > MAX_CANDIDATE_CHARS:
                raise ValueError(f"{where} must be a string (<= {MAX_CANDIDATE_CHARS})")
            if text:  # an empty candidate marks the end of the candidates
                check_candidate(text, where)
            mid = entry.get("sdp_mid", entry.get("sdpMid"))
            if mid is not None and (not isinstance(mid, str) or len(mid) > MAX_ID_CHARS):
                raise ValueError(
                    f"candidates[{index}].sdp_mid must be a string (<= {MAX_ID_CHARS})"
                )
            index_value = entry.get("sdp_mline_index", entry.get("sdpMLineIndex"))
            if index_value is not None and (
                not isinstance(index_value, int)
                or isinstance(index_value, bool)
                or not 0 <= index_value < 1024
            ):
                raise ValueError(
                    f"candidates[{index}].sdp_mline_index must be an integer from 0 to 1023"
                )
            parsed.append(Candidate(text, mid, index_value))
        return cls(pc_id=pc_id, candidates=tuple(parsed))

    def to_json(self) -> dict[str, Any]:
        return {"pc_id": self.pc_id, "candidates": [c.to_json() for c in self.candidates]}
