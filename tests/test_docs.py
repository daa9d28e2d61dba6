"""README is a user's document, and every document's links lead somewhere.

README stays short (method and measurements live in docs/), opens with the two commands, and
neither it nor docs/ carries the history of the code (commit hashes, dates): that is what
commit messages are for.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import ROOT

README = ROOT / "README.md"
DOCUMENTS = [
    README,
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "README.md",
    ROOT / "deploy" / "fly" / "README.md",
]
MAX_README_LINES = 300
#: A commit hash, abbreviated or not: 7 to 40 hex digits with at least one digit and one letter
#: (so neither a plain number nor an English word made of a-f).
COMMIT = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
DATE = re.compile(r"\b(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b")
#: An inline Markdown link or image: [text](target) — the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SETTING = re.compile(r"\bVOICEBOTS_[A-Z0-9_]*[A-Z0-9]\b")


def _prose(path: Path) -> str:
    """The document without its fenced code blocks (code is not a link)."""
    return FENCE.sub("", path.read_text())


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_anchor(heading) for heading in HEADING.findall(_prose(path))}


def _relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(_prose(path))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)
    ]


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines, more than {MAX_README_LINES}: move method, history and "
        "measurements to docs/"
    )


def test_readme_opens_with_the_two_commands() -> None:
    opening = README.read_text().splitlines()[:25]
    for command in ("make up", "make test"):
        assert any(line.startswith(command) for line in opening), (
            f"`{command}` is not among README's first 25 lines"
        )


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_commit_hashes_or_dates(path: Path) -> None:
    text = path.read_text()
    found = COMMIT.findall(text) + DATE.findall(text)
    assert not found, f"{path.relative_to(ROOT)} names commits or dates: {found}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings(path: Path) -> None:
    broken = []
    for target in _relative_links(path):
        name, _, anchor = target.partition("#")
        linked = (path.parent / name).resolve() if name else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{path.relative_to(ROOT)} links nowhere: {broken}"


def _settings_block() -> str:
    text = README.read_text()
    start, end = text.find("<!-- settings:start -->"), text.find("<!-- settings:end -->")
    assert 0 <= start < end, "README has no <!-- settings:start --> … <!-- settings:end --> block"
    return text[start:end]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_name_only_settings_that_exist(path: Path) -> None:
    """A setting named anywhere is in README's settings table, or one that docker compose or
    Fly.io's configuration reads; a removed setting does not linger in prose."""
    known = set(SETTING.findall(_settings_block()))
    for config in ("docker-compose.yml", "deploy/fly/fly.toml"):
        known.update(SETTING.findall((ROOT / config).read_text()))
    text = path.read_text().replace(_settings_block(), "")
    unknown = sorted(set(SETTING.findall(text)) - known)
    assert not unknown, f"{path.relative_to(ROOT)} names settings that do not exist: {unknown}"


def test_the_checks_see_what_they_look_for() -> None:
    assert COMMIT.findall("measured at 3158fd4 and 77422e9") == ["3158fd4", "77422e9"]
    assert not COMMIT.findall("port 4000031, the word defaced, RFC 8445, 21m00Tcm4TlvDq8ikWAM")
    assert DATE.findall("run of 2026-12-06 10:09 UTC") == ["2026-12-06"]
    assert _relative_links(README), "found no relative links in README; the pattern is wrong"
    assert _anchor("What `bot()` gets, and why: a test") == "what-bot-gets-and-why-a-test"
    assert SETTING.findall("`VOICEBOTS_*`, `VOICEBOTS_BOT=x.py`") == ["VOICEBOTS_BOT"]
