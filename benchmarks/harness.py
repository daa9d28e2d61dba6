"""Runs voicebots' real processes for the bench and the tests: a private Redis, the spawner,
signaling, the worker and the fake providers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from common.record import call_key

__all__ = [
    "Redis",
    "System",
    "base_env",
    "free_port",
    "run_fake_openai_process",
    "run_redis",
    "run_system",
    "run_url_process",
    "run_worker_burst",
    "stop_process",
    "wait_until",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], object],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            detail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{detail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    detail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise TimeoutError(f"{what} not ready in {timeout} s\n{detail}")


@dataclass
class Redis:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def record(self, session_id: str) -> dict[str, str]:
        """The call record hash (empty if there is none)."""
        data: dict[str, str] = self.client().hgetall(call_key(session_id))  # type: ignore[assignment]
        return data

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def run_redis(port: int | None = None) -> Iterator[Redis]:
    """A private redis-server on a free loopback port, keeping nothing on disk."""
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    instance = Redis(port, process)
    try:
        wait_until(lambda: instance.client().ping(), 10, "redis-server", process)
        yield instance
    finally:
        instance.stop()


@dataclass
class System:
    url: str
    spawner_url: str
    redis: Redis
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.spawner_url}/status", timeout=5).json())

    def start(self, name: str) -> None:
        """Start (or start again) ``spawner`` or ``signaling`` and wait until it serves."""
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "voicebots", name],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        if name == "spawner":
            min_idle = int(self.env["VOICEBOTS_MIN_IDLE"])
            wait_until(lambda: self.status()["pool"]["idle"] >= min_idle, 90, name, process, log)
        else:
            wait_until(
                lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200,
                30,
                name,
                process,
                log,
            )

    def stop(self, name: str, timeout: float = 30) -> int:
        """SIGTERM one process and wait for it; returns its exit status."""
        process = self.processes[name]
        stop_process(process, timeout)
        return int(process.returncode)

    def wait_until(self, check: Callable[[], object], timeout: float, what: str) -> None:
        wait_until(check, timeout, what)


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


#: Where each test system keeps its logs and spool; conftest points it into pytest's own
#: temporary directory, of which pytest keeps the last three runs.
SYSTEMS_DIR_ENV = "VOICEBOTS_TEST_SYSTEMS_DIR"


def base_env(redis_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOICEBOTS_", "OPENAI_", "ELEVENLABS_"))
    }
    env.update({"REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
    return env


@contextmanager
def run_system(
    redis_server: Redis, env: dict[str, str] | None = None, min_idle: int = 2, max_bots: int = 4
) -> Iterator[System]:
    """The spawner and signaling as real processes, configured through their environment."""
    logs = Path(tempfile.mkdtemp(prefix="system-", dir=os.environ.get(SYSTEMS_DIR_ENV)))
    spawner_port, signaling_port = free_port(), free_port()
    full_env = base_env(redis_server.url)
    full_env.update(
        {
            "VOICEBOTS_PORT": str(signaling_port),
            "VOICEBOTS_SPAWNER_URL": f"http://127.0.0.1:{spawner_port}",
            "VOICEBOTS_MIN_IDLE": str(min_idle),
            "VOICEBOTS_MAX_BOTS": str(max_bots),
            "VOICEBOTS_SPOOL_DIR": str(logs / "spool"),
        }
    )
    full_env.update(env or {})
    system = System(
        url=f"http://127.0.0.1:{signaling_port}",
        spawner_url=f"http://127.0.0.1:{spawner_port}",
        redis=redis_server,
        env=full_env,
        logs=logs,
    )
    try:
        system.start("spawner")
        system.start("signaling")
        yield system
    finally:
        for process in system.processes.values():
            stop_process(process)


def run_worker_burst(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs ``voicebots worker --burst`` until the post-call queue is empty."""
    return subprocess.run(
        [sys.executable, "-m", "voicebots", "worker", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def run_url_process(module: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``python -m module args`` that prints its URL once it serves; yields (URL, process)."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"{module} did not start (printed {url!r})")
        yield url, process
    finally:
        stop_process(process, 10)


@contextmanager
def run_fake_openai_process(*args: str) -> Iterator[str]:
    """The fake OpenAI-compatible server as its own process; yields its base URL."""
    with run_url_process("benchmarks.fakes.openai_server", *args) as (url, _process):
        yield url
