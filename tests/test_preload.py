"""The zygote's preload: what it loads, and the pocketsphinx decoder it shares with bots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from benchmarks.harness import base_env
from bots.providers import offline_stt
from bots.providers.offline_stt import PocketsphinxSTTService, preload_decoder
from tests import ROOT

_PROBE = """
import json, sys, threading
import bots.preload
from bots.providers import offline_stt
import openai._utils._transform
print(json.dumps({
    "missing": [m for m in bots.preload.LAZY_MODULES if m not in sys.modules],
    "decoder": offline_stt._preloaded is not None,
    "openai": "openai.resources.chat.completions.completions" in sys.modules,
    "requests_rehearsed": openai._utils._transform.get_type_hints.cache_info().currsize > 0,
    "threads": threading.active_count(),
}))
"""


def _probe(**env: str) -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env={**base_env("redis://127.0.0.1:1/0"), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


@pytest.fixture
def no_preloaded_decoder() -> Iterator[None]:
    offline_stt._preloaded = None
    yield
    offline_stt._preloaded = None


def test_preload_imports_what_bots_would_import_after_the_fork() -> None:
    found = _probe(OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    assert found == {
        "missing": [],
        "decoder": False,
        "openai": True,
        "requests_rehearsed": True,
        "threads": 1,  # the zygote forks: no thread of the rehearsal may outlive it
    }


def test_the_zygote_loads_the_decoder_only_for_offline_stt() -> None:
    assert _probe(VOICEBOTS_STT="offline", VOICEBOTS_LLM="offline")["decoder"] is True


def test_a_forked_bot_takes_the_preloaded_decoder(no_preloaded_decoder: None) -> None:
    preload_decoder()
    shared = offline_stt._preloaded
    assert shared is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the bot: its first service takes the zygote's decoder, a second does not
        first, second = PocketsphinxSTTService(), PocketsphinxSTTService()
        first.load()
        second.load()
        taken = first._decoder is shared and second._decoder is not shared
        os.write(write, b"1" if taken else b"0")
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert offline_stt._preloaded is shared, "the parent keeps it for the next fork"


def test_a_service_with_its_own_model_settings_builds_its_own(
    no_preloaded_decoder: None,
) -> None:
    preload_decoder()
    service = PocketsphinxSTTService(decoder_config={"seed": 7})
    service.load()
    assert service._decoder is not None
    assert offline_stt._preloaded is not None, "left for a service with the default model"
