"""The three systems under test, as real processes on loopback.

- **voicebots**: a private redis-server, the spawner and signaling (started by the test harness
  in :mod:`benchmarks.harness`), and the fake OpenAI-compatible server in its own process with fixed
  injected delays; every provider is ``openai`` pointed at the fake.
- **pipecat runner**: the same bot file on pipecat's development runner
  (:mod:`benchmarks.pipecat_runner`), with the bots' environment and the same fake.
- **bare aiortc**: :mod:`benchmarks.echo_server` in its own process.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.config import BenchConfig
from benchmarks.harness import (
    System,
    run_fake_openai_process,
    run_redis,
    run_system,
    run_url_process,
)
from benchmarks.pipecat_runner import PipecatRunner, run_pipecat_runner

__all__ = ["GREETING", "BareEcho", "Systems", "Voicebots", "run_systems"]

#: What the fake transcribes every segment as, and the LLM's fixed (short) reply.
TRANSCRIPT = "what time is it in london right now"
REPLY = "Sure."
#: What both bots say on connect while time to first word is measured (the agent's default).
GREETING = "Hello! I am listening."


@dataclass
class Voicebots:
    system: System
    #: Bots seen so far, by pid: the benchmark reads refills as the pids it has not seen.
    seen: set[int] = field(default_factory=set)
    name: str = "voicebots"

    @property
    def url(self) -> str:
        return self.system.url

    async def status(self, http: httpx.AsyncClient) -> dict[str, Any]:
        reply = await http.get(f"{self.system.spawner_url}/status", timeout=10)
        reply.raise_for_status()
        return dict(reply.json())

    async def call_pids(self, http: httpx.AsyncClient, session_ids: set[str]) -> list[int]:
        """The bots serving these sessions: their CPU is the calls' cost."""
        status = await self.status(http)
        return [
            int(c["bot_pid"])
            for c in status["calls"]
            if c["session_id"] in session_ids and c.get("bot_pid")
        ]

    async def wait_warm(self, http: httpx.AsyncClient, idle: int, timeout: float = 180.0) -> None:
        """Until ``idle`` bots are warm, none is starting and no call is left."""
        deadline = time.monotonic() + timeout
        while True:
            pool = (await self.status(http))["pool"]
            if pool["idle"] >= idle and pool["starting"] == 0 and pool["busy"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the pool did not refill to {idle} idle bots: {pool}")
            await asyncio.sleep(0.1)

    async def idle_bots(self, http: httpx.AsyncClient) -> list[dict[str, Any]]:
        pool = (await self.status(http))["pool"]
        return [bot for bot in pool["bots"] if bot["state"] == "idle"]


@dataclass
class BareEcho:
    url: str
    process: subprocess.Popen[str]
    name: str = "bare_aiortc"

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Systems:
    voicebots: Voicebots
    runner: PipecatRunner
    echo: BareEcho
    fake_openai_url: str


def bot_env(config: BenchConfig, fake_openai_url: str, greeting: str = "") -> dict[str, str]:
    """What the bot file reads: the same for voicebots' bots and for pipecat's runner."""
    return {
        "OPENAI_BASE_URL": fake_openai_url,
        "OPENAI_API_KEY": "sk-bench",
        # Empty for the overhead: the first bot audio after the question is the reply.
        "VOICEBOTS_GREETING": greeting,
    }


def voicebots_env(config: BenchConfig, fake_openai_url: str, greeting: str = "") -> dict[str, str]:
    return {
        **bot_env(config, fake_openai_url, greeting),
        # One loopback client makes every request of the run: per-client limits do not apply.
        "VOICEBOTS_RATE_LIMIT": "0",
    }


def fake_openai_args(config: BenchConfig) -> list[str]:
    return [
        "--transcript",
        TRANSCRIPT,
        "--reply",
        REPLY,
        "--transcription-delay",
        str(config.transcription_delay),
        "--first-token-delay",
        str(config.first_token_delay),
        "--speech-first-byte-delay",
        str(config.speech_first_byte_delay),
        # The tone costs the fake no CPU, so its synthesis never adds to the injected delay.
        "--speech-engine",
        "tone",
    ]


@contextmanager
def run_echo() -> Iterator[BareEcho]:
    with run_url_process("benchmarks.echo_server", "--port", "0") as (url, process):
        yield BareEcho(url, process)


@contextmanager
def run_systems(
    config: BenchConfig, *, greeting: str = "", warm_bots: int | None = None
) -> Iterator[Systems]:
    """The three systems, up at once (so every comparison shares the machine's state).

    ``greeting`` is what both bots say on connect; ``warm_bots`` the voicebots pool's idle
    bots (``config.warm_bots`` by default).
    """
    warm = warm_bots or config.warm_bots
    with ExitStack() as stack:
        redis_server = stack.enter_context(run_redis())
        fake_url = stack.enter_context(run_fake_openai_process(*fake_openai_args(config)))
        system = stack.enter_context(
            run_system(
                redis_server,
                voicebots_env(config, fake_url, greeting),
                min_idle=warm,
                # Room for a full burst in calls while the pool refills behind it.
                max_bots=2 * warm,
            )
        )
        runner = stack.enter_context(
            run_pipecat_runner(bot_env(config, fake_url, greeting), system.logs)
        )
        echo = stack.enter_context(run_echo())
        yield Systems(Voicebots(system), runner, echo, fake_url)
