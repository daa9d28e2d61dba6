"""The baseline that runs the same bot file: pipecat's own development runner.

``python -m bots.agent -t webrtc --host 127.0.0.1 --port N`` — the built-in agent, a bot file
that ends with pipecat's ``main()`` footer (``examples/builtin.py`` re-exports it), on
``pipecat.runner.run.main``, the way a pipecat user runs a bot file. One process and one event
loop serve every call: ``POST /start`` registers a session, ``POST /sessions/{id}/api/offer``
builds the peer connection, answers, and only then starts ``bot(runner_args)``. It has no
``/api/sessions`` status or hang-up route: a call ends when the caller closes its peer.

It gets the environment voicebots' bots get (same providers, greeting, VAD and turn settings).
pipecat's runner calls ``load_dotenv(override=True)`` at import, which looks for ``.env`` files
upwards from the installed package; ``PYTHON_DOTENV_DISABLED=1`` turns that off, so no stray
``.env`` can change its providers. Like every pipecat runner it logs at DEBUG, here into a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.harness import free_port, stop_process

__all__ = ["BOT_MODULE", "PipecatRunner", "run_pipecat_runner"]

#: The bot file voicebots runs by default; it ends with the runner's ``main()`` footer.
BOT_MODULE = "bots.agent"
START_TIMEOUT_S = 60.0
#: Variables of this process that could pick other providers or settings; the bench sets its own.
_SCRUBBED = ("VOICEBOTS_", "OPENAI_", "ELEVENLABS_", "PIPECAT_", "DAILY_", "LIVEKIT_")


@dataclass
class PipecatRunner:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    name: str = "pipecat_runner"

    @property
    def pid(self) -> int:
        return self.process.pid


def runner_env(bot_env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without provider settings, then ``bot_env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env.update(bot_env)
    env.update({"PYTHONUNBUFFERED": "1", "PYTHON_DOTENV_DISABLED": "1"})
    return env


def _command() -> list[str]:
    return [sys.executable, "-m", BOT_MODULE, "-t", "webrtc", "--host", "127.0.0.1"]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/status", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def run_pipecat_runner(bot_env: Mapping[str, str], log_dir: Path) -> Iterator[PipecatRunner]:
    """The development runner on a free loopback port, until the block ends."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"pipecat-runner-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_command(), "--port", str(port)],
            env=runner_env(bot_env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    runner = PipecatRunner(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(runner.url):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"pipecat's runner did not start ({process.poll()}):\n{tail}")
            time.sleep(0.1)
        yield runner
    finally:
        stop_process(process)
