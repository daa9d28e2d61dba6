"""README's settings table is the one ``voicebots settings`` prints from common/settings.py,
every variable the code names is declared there, and there are at most 40 of them; each
setting reads and fails the same way, from the environment or from the command line."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from bots.config import PostCallConfig, ProviderConfig
from common.settings import (
    GREETING,
    LLM,
    MAX_BOTS,
    PORT,
    REDIS_URL,
    SETTINGS,
    SPAWNER_URL,
    STT,
    TTS,
    Service,
    is_declared,
)
from signaling.config import SignalingConfig
from spawner.config import SpawnerConfig, usable_cpus
from tests import ROOT
from voicebots.cli import OPTIONS, main

#: What a user may set, counted as common/settings.py says.
MAX_SETTINGS = 40
PRODUCT = ("signaling", "spawner", "bots", "media", "common", "voicebots")
#: A variable's name wherever the code says it: a read, a message, a docstring.
NAME = re.compile(
    r"(?<![A-Za-z0-9_])((?:VOICEBOTS|OPENAI|ELEVENLABS|OTEL)_[A-Z0-9_]*[A-Z0-9]|REDIS_URL)\b"
)
BLOCK = re.compile(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", re.DOTALL)


def _named_in_code() -> set[str]:
    names: set[str] = set()
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            names.update(NAME.findall(path.read_text()))
    return names


def test_readme_table_is_the_generated_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    printed = capsys.readouterr().out
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    assert len(blocks) == 1, "README needs one <!-- settings:start --> … :end --> block"
    assert blocks[0] == printed, "README's table is stale: paste `voicebots settings` into it"
    assert printed.count("\n") == len(SETTINGS) + 2


def test_every_variable_the_code_names_is_declared() -> None:
    named = _named_in_code()
    assert {"REDIS_URL", "VOICEBOTS_PORT", "OPENAI_API_KEY"} <= named, "the pattern is wrong"
    undeclared = sorted(name for name in named if not is_declared(name))
    assert not undeclared, f"named in the code but not in common/settings.py: {undeclared}"


def test_at_most_forty_settings() -> None:
    assert len(SETTINGS) <= MAX_SETTINGS, [s.name for s in SETTINGS]
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    # OpenTelemetry's variables count as one: only that one is declared.
    assert [s.name for s in SETTINGS if s.name.startswith("OTEL_")] == ["OTEL_TRACES_EXPORTER"]


def test_options_are_settings_of_their_own() -> None:
    options = [s.option for s in SETTINGS if s.option]
    assert len(options) == len(set(options))
    for command, settings in OPTIONS.items():
        assert all(s.option and s in SETTINGS for s in settings), command


# -- reading a setting ----------------------------------------------------------------------


def _error(read: Callable[[], object]) -> str:
    with pytest.raises(ValueError) as caught:
        read()
    return str(caught.value)


def test_unset_or_empty_is_the_default_and_a_bad_value_names_the_variable() -> None:
    assert PORT.read({}) == PORT.read({"VOICEBOTS_PORT": " "}) == 7860
    assert PORT.read({"VOICEBOTS_PORT": " 8080 "}) == 8080
    assert _error(lambda: PORT.read({"VOICEBOTS_PORT": "http"})) == (
        "VOICEBOTS_PORT must be an integer, got 'http'"
    )
    assert _error(lambda: MAX_BOTS.read({"VOICEBOTS_MAX_BOTS": "0"})) == (
        "VOICEBOTS_MAX_BOTS must be >= 1, got 0"
    )
    assert _error(lambda: SPAWNER_URL.read({"VOICEBOTS_SPAWNER_URL": "127.0.0.1:7861"})) == (
        "VOICEBOTS_SPAWNER_URL must be an http:// or https:// URL, got '127.0.0.1:7861'"
    )
    # An empty greeting is a value: no greeting.
    assert GREETING.read({}) == "Hello! I am listening."
    assert GREETING.read({"VOICEBOTS_GREETING": ""}) == ""


def test_a_provider_names_its_model_and_voice() -> None:
    assert LLM.read({}) is None  # chosen from the keys that are set
    assert LLM.read({"VOICEBOTS_LLM": "openai"}) == Service("openai", "gpt-4o-mini")
    assert LLM.read({"VOICEBOTS_LLM": "openai:llama3.1:8b"}) == Service("openai", "llama3.1:8b")
    assert TTS.read({"VOICEBOTS_TTS": "elevenlabs@v01ce"}) == Service(
        "elevenlabs", "eleven_flash_v2_5", "v01ce"
    )
    assert TTS.read({"VOICEBOTS_TTS": "OpenAI:tts-1@nova"}) == Service("openai", "tts-1", "nova")
    assert _error(lambda: STT.read({"VOICEBOTS_STT": "whisper"})) == (
        "VOICEBOTS_STT must name one of offline, openai; got 'whisper'"
    )
    assert _error(lambda: TTS.read({"VOICEBOTS_TTS": "offline@bob"})) == (
        "VOICEBOTS_TTS: the offline provider takes no model or voice; got 'offline@bob'"
    )


def test_provider_settings_reach_the_config() -> None:
    env = {
        "OPENAI_API_KEY": "sk-x",
        "ELEVENLABS_API_KEY": "el-x",
        "VOICEBOTS_STT": "offline",
        "VOICEBOTS_LLM": "openai:gpt-test",
    }
    providers = ProviderConfig.from_env(env)
    assert (providers.stt, providers.llm, providers.tts) == ("offline", "openai", "elevenlabs")
    assert providers.openai_llm_model == "gpt-test"
    assert providers.elevenlabs_voice_id == "21m00Tcm4TlvDq8ikWAM"
    voiced = ProviderConfig.from_env({**env, "VOICEBOTS_TTS": "openai:tts-1@nova"})
    assert (voiced.tts, voiced.openai_tts_model, voiced.openai_tts_voice) == (
        "openai",
        "tts-1",
        "nova",
    )
    assert _error(lambda: ProviderConfig.from_env({"VOICEBOTS_TTS": "elevenlabs"})) == (
        "VOICEBOTS_TTS=elevenlabs needs ELEVENLABS_API_KEY"
    )


def test_config_defaults_are_the_declared_ones() -> None:
    spawner, signaling = SpawnerConfig(), SignalingConfig()
    assert SpawnerConfig.from_env({}) == replace(spawner, answer_concurrency=usable_cpus())
    assert SignalingConfig.from_env({}) == signaling
    assert PostCallConfig.from_env({}) == PostCallConfig()
    assert (signaling.port, spawner.port, spawner.max_bots) == (7860, 7861, 8)
    assert (
        spawner.redis_url
        == signaling.redis_url
        == PostCallConfig().redis_url
        == (REDIS_URL.default)
    )
    assert SpawnerConfig.from_env({"VOICEBOTS_SPAWNER_URL": "http://spawner:9000/"}).port == 9000


# -- the command line ----------------------------------------------------------------------


def test_up_lists_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["up", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--bot", "--max-bots", "--min-idle", "--redis-url"):
        assert option in text
    assert "$VOICEBOTS_MAX_BOTS" in text


def test_a_bad_option_is_refused_by_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["spawner", "--max-bots", "0"])
    assert done.value.code == 2
    assert "argument --max-bots: --max-bots must be >= 1, got 0" in capsys.readouterr().err


def test_options_override_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOICEBOTS_MAX_BOTS", "8")
    monkeypatch.setenv("VOICEBOTS_MIN_IDLE", "1")
    # The option wins over the variable, and the settings are checked before anything starts.
    assert main(["up", "--min-idle", "9"]) == 2
    assert capsys.readouterr().err == (
        "voicebots: VOICEBOTS_MIN_IDLE (9) must not exceed VOICEBOTS_MAX_BOTS (8)\n"
    )
