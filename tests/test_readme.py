"""Every setting the code reads is documented in README."""

from __future__ import annotations

import re

from tests import ROOT

SETTING = re.compile(r'"((?:VOICEBOTS|OPENAI|ELEVENLABS)_[A-Z0-9_]+|REDIS_URL)"')


def test_every_setting_is_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    read: set[str] = set()
    for package in ("signaling", "spawner", "bots", "media"):
        for path in (ROOT / package).rglob("*.py"):
            read.update(SETTING.findall(path.read_text()))
    assert read, "found no settings; the pattern is wrong"
    missing = sorted(name for name in read if f"`{name}`" not in readme)
    assert not missing, f"settings missing from README: {missing}"
