"""A user's own bot file in the warm pool, over real processes, sockets and Redis.

The bot files here are ordinary pipecat runner-convention files written into the test's
folder: voicebots runs them unchanged, records what their pipelines heard and said, records
their failures, and refuses broken ones at start-up.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.caller import CallOptions, CallResult, run_call
from benchmarks.harness import Redis, System, base_env, free_port, run_system
from bots.bot_file import BotFileError, load_bot
from tests import FIXTURES, ROOT

SPEECH = FIXTURES / "hello.wav"

#: A bot file of its own: the built-in agent's pipeline, with a failure the body can ask for.
FAILING_BOT = """
import asyncio

from bots.agent import bot as agent


async def bot(runner_args):
    call = asyncio.ensure_future(agent(runner_args))
    after = (runner_args.body or {}).get("raise_after")
    if after is None:
        await call
        return
    await asyncio.sleep(float(after))
    call.cancel()
    raise RuntimeError("the booking system is down")
"""

#: A bot file that checks it got pipecat's runner arguments exactly, then runs the agent.
CHECKING_BOT = """
from pipecat.runner.types import SmallWebRTCRunnerArguments
from loguru import logger

from bots.agent import bot as agent


async def bot(runner_args):
    assert isinstance(runner_args, SmallWebRTCRunnerArguments), type(runner_args)
    assert runner_args.handle_sigint is False and runner_args.handle_sigterm is False
    logger.info(f"runner args: session {runner_args.session_id} body {runner_args.body}")
    await agent(runner_args)
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _call(system: System, **overrides: object) -> CallResult:
    settings: dict[str, object] = {"max_seconds": 20.0, **overrides}
    options = CallOptions(url=system.url, wav=SPEECH, **settings)  # type: ignore[arg-type]
    return asyncio.run(run_call(options))


def _roles(record: dict[str, str]) -> list[tuple[str, str]]:
    return [(line["role"], line["text"]) for line in json.loads(record["transcript"])]


def test_a_user_bot_file_runs_with_runner_arguments_and_is_recorded(
    redis_server: Redis, tmp_path: Path
) -> None:
    path = _write(tmp_path, "checking_bot.py", CHECKING_BOT)
    with run_system(redis_server, {"VOICEBOTS_BOT": str(path)}) as system:
        assert str(path) in system.log("spawner")
        result = _call(system, body={"voice": "calm"})
    assert result.voiced_s > 1.0, "the caller heard no bot audio"
    record = redis_server.record(result.session_id)
    assert record["status"] == "completed", record
    lines = _roles(record)
    roles = [role for role, _ in lines]
    # The greeting (what the bot actually said), the caller's words, the reply, in order.
    assert roles[0] == "assistant" and "user" in roles[1:], lines
    assert "hello" in " ".join(t for r, t in lines if r == "user").lower()
    assert any(t.startswith("You said:") for r, t in lines if r == "assistant"), lines
    logs = json.loads(record["logs"])
    started = [line for line in logs if "runner args:" in line.get("message", "")]
    assert started, "the bot file's own log lines are not in the record"
    assert result.session_id in started[0]["message"]
    assert "'voice': 'calm'" in started[0]["message"]
    turns = json.loads(record["metrics"])["turns"]
    assert turns and "audio_out_ms" in turns[0]


def test_a_bot_that_raises_fails_its_call_alone(redis_server: Redis, tmp_path: Path) -> None:
    path = _write(tmp_path, "failing_bot.py", FAILING_BOT)

    async def both(system: System) -> list[CallResult]:
        failing = CallOptions(
            url=system.url, wav=SPEECH, max_seconds=20.0, body={"raise_after": 1.5}
        )
        healthy = CallOptions(url=system.url, wav=SPEECH, max_seconds=20.0)
        return list(
            await asyncio.gather(run_call(failing), run_call(healthy), return_exceptions=False)
        )

    with run_system(redis_server, {"VOICEBOTS_BOT": str(path)}, min_idle=2) as system:
        failed, healthy = asyncio.run(both(system))

    record = redis_server.record(failed.session_id)
    assert record["status"] == "failed", record
    assert record["end_reason"] == "bot_error: RuntimeError: the booking system is down"
    logs = json.loads(record["logs"])
    assert any("Traceback" in line.get("exception", "") for line in logs), logs
    other = redis_server.record(healthy.session_id)
    assert other["status"] == "completed", other
    assert "user" in {role for role, _ in _roles(other)}
    assert healthy.voiced_s > 1.0


#: A bot file that will not end: it ignores the cancellation voicebots sends at hang-up.
STUBBORN_BOT = """
import asyncio

from bots.agent import bot as agent


async def bot(runner_args):
    call = asyncio.ensure_future(agent(runner_args))
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
"""


def test_a_bot_that_hangs_after_hang_up_is_ended(redis_server: Redis, tmp_path: Path) -> None:
    path = _write(tmp_path, "stubborn_bot.py", STUBBORN_BOT)
    with run_system(redis_server, {"VOICEBOTS_BOT": str(path)}, min_idle=1) as system:
        result = _call(system, max_seconds=6.0)
        record = redis_server.record(result.session_id)
        pid = int(record["bot_pid"])
        # The record is written at the hang-up; the process that would not end is killed by
        # the pool's heartbeat timeout, and the pool replaces it.
        system.wait_until(
            lambda: pid not in {b["pid"] for b in system.status()["pool"]["bots"]},
            30,
            "the stubborn bot to go",
        )
        assert "silent for" in system.log("spawner")
    assert record["status"] == "completed", record
    assert record["end_reason"] == "hangup"
    assert "user" in {role for role, _ in _roles(record)}


# -- bad bot files: refused at start-up, with the file named and the fault said ---------------

BAD_FILES = {
    "syntax.py": ("def bot(:\n", "SyntaxError"),
    "imports.py": (
        "import voicebots_no_such_module\n",
        "No module named 'voicebots_no_such_module'",
    ),
    "nobot.py": ("async def agent(runner_args):\n    pass\n", "defines no `bot`"),
    "sync.py": ("def bot(runner_args):\n    pass\n", "is not an async function"),
    "args.py": ("async def bot(a, b):\n    pass\n", "must take one argument, runner_args"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_bot_files_are_named_and_explained(tmp_path: Path, name: str) -> None:
    text, expected = BAD_FILES[name]
    path = _write(tmp_path, name, text)
    with pytest.raises(BotFileError) as caught:
        load_bot(str(path))
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_a_missing_bot_file_or_module_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "bot.py"
    with pytest.raises(BotFileError, match=f"bot file {missing} does not exist"):
        load_bot(str(missing))
    with pytest.raises(BotFileError, match=r"bot module voicebots_absent\.bot is not installed"):
        load_bot("voicebots_absent.bot")


def test_an_import_error_carries_its_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.py", "x = 1\nraise RuntimeError('no config file')\n")
    with pytest.raises(BotFileError) as caught:
        load_bot(str(path))
    text = str(caught.value)
    assert "RuntimeError: no config file" in text
    assert "Traceback" in text and f'File "{path}", line 2' in text


def _voicebots(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``voicebots`` command, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "voicebots", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_spawner_refuses_a_broken_bot_at_start_up(redis_server: Redis, tmp_path: Path) -> None:
    path = _write(tmp_path, "sync.py", BAD_FILES["sync.py"][0])
    spawner_url = f"http://127.0.0.1:{free_port()}"
    env = {**base_env(redis_server.url), "VOICEBOTS_SPAWNER_URL": spawner_url}
    done = _voicebots("spawner", "--bot", str(path), env=env)
    assert done.returncode == 2, done.stderr
    assert f"`bot` in {path} is not an async function" in done.stderr


def test_up_refuses_a_broken_bot_before_starting_anything(tmp_path: Path) -> None:
    missing = tmp_path / "missing.py"
    done = _voicebots("up", "--bot", str(missing))
    assert done.returncode == 2, done.stderr
    assert f"voicebots: bot file {missing} does not exist" in done.stderr
    assert "open http://" not in done.stdout  # nothing was started


def test_readyz_is_never_ready_with_a_broken_bot(redis_server: Redis, tmp_path: Path) -> None:
    path = _write(tmp_path, "nobot.py", BAD_FILES["nobot.py"][0])
    with pytest.raises(RuntimeError, match="defines no `bot`"):
        with run_system(redis_server, {"VOICEBOTS_BOT": str(path)}) as system:
            # Not reached: the spawner exits before it is ready. Should it not, readyz says.
            assert httpx.get(system.url + "/readyz").status_code != 200
