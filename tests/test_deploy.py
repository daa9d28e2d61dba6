"""The deployment files, checked against the settings the code reads from them.

docker-compose.yml is validated by Debian's ``docker-compose config`` (no Docker engine
needed); deploy/fly/fly.toml is parsed and cross-checked through the same config classes the
processes use; the Fly scripts run against stub commands.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bots.config import PostCallConfig
from common.settings import is_declared
from media.config import MediaConfig
from media.ports import PortRange
from signaling.config import SignalingConfig
from spawner.config import SpawnerConfig
from tests import ROOT

FLY = ROOT / "deploy" / "fly"
_spec = importlib.util.spec_from_file_location("flytoml", FLY / "flytoml.py")
assert _spec is not None and _spec.loader is not None
flytoml: Any = importlib.util.module_from_spec(_spec)
sys.modules["flytoml"] = flytoml  # dataclasses look their module up while it loads
_spec.loader.exec_module(flytoml)


def _clean_env() -> dict[str, str]:
    """This process's environment without settings that compose would interpolate."""
    prefixes = ("VOICEBOTS_", "OPENAI_", "ELEVENLABS_", "REDIS_", "COMPOSE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    done = subprocess.run(
        ["docker-compose", "--file", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT,
        env={**_clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    return float(duration)


# --- docker-compose.yml ---


def test_compose_runs_the_three_processes_next_to_redis() -> None:
    services = _compose()["services"]
    assert set(services) == {"redis", "signaling", "spawner", "worker"}
    for name in ("signaling", "spawner", "worker"):
        service = services[name]
        assert service["command"] == ["voicebots", name]
        assert service["build"]["context"] == str(ROOT)
        assert service["init"] is True, "tini must reap the bots' orphans and pass SIGTERM"
    for name in ("spawner", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["signaling"]["depends_on"]["spawner"]["condition"] == "service_healthy"


def test_compose_settings_agree_with_what_the_code_reads() -> None:
    services = _compose()["services"]
    spawner = SpawnerConfig.from_env(services["spawner"]["environment"])
    signaling = SignalingConfig.from_env(services["signaling"]["environment"])
    worker = PostCallConfig.from_env(services["worker"]["environment"])

    # Signaling reaches the control API across the compose network; nothing publishes it.
    assert spawner.host == "0.0.0.0"
    assert signaling.spawner_url == f"http://spawner:{spawner.port}"
    assert signaling.host == "0.0.0.0"
    assert spawner.redis_url == signaling.redis_url == worker.redis_url == "redis://redis:6379/0"

    # The UDP range is published with the same numbers inside and out, and only it.
    media = spawner.bot.media
    assert media.udp_ports == PortRange(40000, 40031)
    udp = [p for p in services["spawner"]["ports"] if p.get("protocol") == "udp"]
    assert sorted(p["published"] for p in udp) == list(media.udp_ports)
    assert all(p["published"] == p["target"] for p in udp)
    assert len(services["spawner"]["ports"]) == len(udp)
    # Signaling's port is published; the page is at http://localhost:7860.
    [http] = services["signaling"]["ports"]
    assert http["published"] == http["target"] == signaling.port == 7860

    # A laptop default: the published ports answer on 127.0.0.1.
    assert media.public_ip == "127.0.0.1"
    # Bots and clients agree on the ICE servers.
    assert signaling.media == media

    # docker stops the spawner only after its drain has had its time.
    grace = _seconds(services["spawner"]["stop_grace_period"])
    assert grace > spawner.drain_timeout


def test_deployments_set_only_declared_settings() -> None:
    """A variable the code does not read would be a setting silently ignored."""
    named = {
        name
        for service in _compose()["services"].values()
        for name in service.get("environment", {})
    }
    named |= set(tomllib.loads((FLY / "fly.toml").read_text())["env"])
    named |= set(re.findall(r"^ENV (\w+)=", (ROOT / "Dockerfile").read_text(), re.MULTILINE))
    secrets = re.search(r"^SECRETS=\((.*?)\)", (FLY / "deploy.sh").read_text(), re.S | re.M)
    assert secrets is not None
    named |= set(secrets[1].split())
    ours = {n for n in named if n.startswith(("VOICEBOTS_", "OPENAI_", "ELEVENLABS_", "REDIS_"))}
    assert {"REDIS_URL", "VOICEBOTS_SPOOL_DIR", "VOICEBOTS_MAX_BOTS"} <= ours
    assert sorted(n for n in ours if not is_declared(n)) == []


def test_compose_takes_the_public_ip_and_keys_from_the_shell() -> None:
    env = {"VOICEBOTS_PUBLIC_IP": "192.168.1.20", "OPENAI_API_KEY": "sk-test"}
    services = _compose(env)["services"]
    for name in ("signaling", "spawner", "worker"):
        environment = services[name]["environment"]
        assert environment["VOICEBOTS_PUBLIC_IP"] == "192.168.1.20"
        assert environment["OPENAI_API_KEY"] == "sk-test"
    assert MediaConfig.from_env(services["spawner"]["environment"]).public_ip == "192.168.1.20"


def test_dockerfile_builds_what_compose_and_fly_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM python:3.11-slim\n" in dockerfile
    assert "espeak-ng" in dockerfile and "\nUSER voicebots\n" in dockerfile
    # Dependencies are installed before the source is copied (the cached layer).
    assert dockerfile.index("COPY pyproject.toml") < dockerfile.index("COPY bots/")
    assert dockerfile.index("pip install -r") < dockerfile.index("COPY bots/")
    # Fly's `app` process is in the image, at the path fly.toml runs.
    assert f"COPY deploy/fly/app.sh {flytoml.APP_COMMAND.removeprefix('/app/')}" in dockerfile
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignore and "!deploy/fly/app.sh" in ignore


# --- deploy/fly/fly.toml ---


def _fly_toml() -> dict[str, Any]:
    with (FLY / "fly.toml").open("rb") as file:
        return tomllib.load(file)


def test_fly_toml_is_what_the_generator_renders() -> None:
    text = (FLY / "fly.toml").read_text()
    command = text.splitlines()[1].removeprefix("#   ")
    assert command.startswith("python deploy/fly/flytoml.py render ")
    rendered = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), *command.split()[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert rendered == text, f"deploy/fly/fly.toml is stale: run `{command} --out {FLY}/fly.toml`"


def test_fly_toml_agrees_with_what_the_code_reads() -> None:
    fly = _fly_toml()
    env = fly["env"]
    spawner = SpawnerConfig.from_env(env)
    signaling = SignalingConfig.from_env(env)
    media = spawner.bot.media
    assert media.udp_ports is not None

    # Every UDP port of the range is declared, once, as its own service, internal == external.
    udp = [s for s in fly["services"] if s["protocol"] == "udp"]
    assert sorted(s["internal_port"] for s in udp) == list(media.udp_ports)
    for service in udp:
        assert service["ports"] == [{"port": service["internal_port"]}]
        assert service["processes"] == ["app"]
        assert service["auto_stop_machines"] is False
    # UDP binds fly-global-services; TCP binds every address.
    assert media.bind_host == "fly-global-services"
    assert signaling.host == "0.0.0.0"
    # The public IP is per app (its dedicated IPv4): a secret that deploy.sh stages.
    assert "VOICEBOTS_PUBLIC_IP" not in env
    assert "VOICEBOTS_PUBLIC_IP=" in (FLY / "deploy.sh").read_text()

    # SIGTERM starts the drain, which ends before Fly.io's SIGKILL (at most 300 s later).
    assert fly["kill_signal"] == "SIGTERM"
    assert spawner.drain_timeout < fly["kill_timeout"] <= 300

    # HTTP goes to signaling; readiness is checked on /readyz; Machines are never auto-stopped.
    http = fly["http_service"]
    assert http["internal_port"] == signaling.port
    assert http["auto_stop_machines"] is False and http["min_machines_running"] == 1
    ready = fly["checks"]["readyz"]
    assert (ready["type"], ready["port"], ready["path"]) == ("http", signaling.port, "/readyz")

    # Process groups: the spawner + signaling script, and the rq worker.
    assert fly["processes"]["worker"] == "voicebots worker"
    script = FLY / "app.sh"
    assert fly["processes"]["app"] == "/app/deploy/fly/app.sh" and os.access(script, os.X_OK)

    # The app Machine holds every bot at its cgroup limits, plus the overhead.
    [vm] = [v for v in fly["vm"] if v["processes"] == ["app"]]
    assert vm["cpu_kind"] == "performance"
    limits = spawner.limits
    assert vm["cpus"] >= spawner.max_bots * limits.cpu + flytoml.OVERHEAD_CPUS
    memory_mb = int(vm["memory"].removesuffix("mb"))
    assert memory_mb >= spawner.max_bots * limits.memory_mb + flytoml.OVERHEAD_MB


@pytest.mark.parametrize(
    ("bots", "cpus", "memory_mb"),
    [(1, 1, 2048), (3, 2, 4096), (7, 4, 8192), (8, 8, 16384), (15, 8, 16384), (31, 16, 32768)],
)
def test_vm_size_from_bots(bots: int, cpus: int, memory_mb: int) -> None:
    assert flytoml.vm_size(bots, 0.5, 1024) == flytoml.VmSize(cpus, memory_mb)


def test_vm_size_refuses_what_no_machine_holds() -> None:
    with pytest.raises(ValueError, match=r"64 bots need 32\.5 vCPUs"):
        flytoml.vm_size(64, 0.5, 1024)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kill_timeout": 301}, "Fly.io's kill_timeout is at most 300 s"),
        ({"kill_timeout": 20}, "kill_timeout must exceed the 20 s left after draining"),
        ({"ports": PortRange(40000, 40009)}, "10 UDP ports are too few for 7 bots"),
        ({"ports": PortRange(40000, 40031), "max_bots": 0}, "VOICEBOTS_MAX_BOTS must be >= 1"),
    ],
)
def test_plan_refuses_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        flytoml.plan("voicebots-ams", "ams", **kwargs)


def test_dedicated_ipv4_from_flyctl_json() -> None:
    listed = [
        {"Address": "2a09:8280:1::1", "Type": "v6", "Region": "global"},
        {"Address": "66.241.125.9", "Type": "shared_v4"},
        {"Address": "137.66.7.42", "Type": "v4", "Region": "global"},
    ]
    assert flytoml.dedicated_ipv4(listed) == "137.66.7.42"
    assert flytoml.dedicated_ipv4([{"ip": "137.66.7.42", "type": "v4"}]) == "137.66.7.42"
    with pytest.raises(ValueError, match="expected one dedicated IPv4 address, found none"):
        flytoml.dedicated_ipv4(listed[:2])


# --- the scripts ---

STUB = """#!/usr/bin/env bash
# A stand-in for `voicebots`: logs its life; on SIGTERM "drains" for STUB_DRAIN s, then exits.
echo "$1 start $$" >> "$STUB_LOG"
drain() {
  echo "$1 term" >> "$STUB_LOG"; sleep "$STUB_DRAIN"; echo "$1 exit" >> "$STUB_LOG"; exit 0
}
trap "drain $1" TERM
while true; do sleep 0.05; done
"""


@dataclass
class AppSh:
    process: subprocess.Popen[bytes]
    log: Path
    stderr: Path

    def events(self) -> list[str]:
        return [" ".join(line.split()[:2]) for line in self.log.read_text().splitlines()]

    def pids(self) -> dict[str, int]:
        starts = [line.split() for line in self.log.read_text().splitlines() if " start " in line]
        return {name: int(pid) for name, _, pid in starts}


@pytest.fixture
def app_sh(tmp_path: Path) -> Iterator[AppSh]:
    """deploy/fly/app.sh running over a stub `voicebots`, both of its processes started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "voicebots").write_text(STUB)
    (bin_dir / "voicebots").chmod(0o755)
    log, stderr = tmp_path / "log", tmp_path / "stderr"
    log.touch()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_DRAIN": "0.5",
    }
    with stderr.open("wb") as err:
        process = subprocess.Popen([str(FLY / "app.sh")], env=env, stderr=err)
    app = AppSh(process, log, stderr)
    try:
        deadline = time.monotonic() + 10
        while len(app.pids()) < 2:
            assert time.monotonic() < deadline, "app.sh did not start both processes"
            time.sleep(0.05)
        yield app
    finally:
        # The stubs run in sessions of their own: end whatever a failed test left, by PID.
        if process.poll() is None:
            process.kill()
            process.wait(5)
        for pid in app.pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_app_sh_drains_the_spawner_before_stopping_signaling(app_sh: AppSh) -> None:
    app_sh.process.send_signal(signal.SIGTERM)
    assert app_sh.process.wait(10) == 0
    # Signaling keeps serving while the spawner drains, and stops only after it has exited.
    assert app_sh.events()[2:] == [
        "spawner term",
        "spawner exit",
        "signaling term",
        "signaling exit",
    ]


def test_app_sh_stops_everything_when_one_process_dies(app_sh: AppSh) -> None:
    os.kill(app_sh.pids()["signaling"], signal.SIGKILL)
    assert app_sh.process.wait(10) == 1
    assert app_sh.events()[2:] == ["spawner term", "spawner exit"]
    assert "signaling exited on its own; draining the spawner" in app_sh.stderr.read_text()


def test_deploy_sh_dry_run(tmp_path: Path) -> None:
    secret = "sk-do-not-print-me"
    env = {
        **_clean_env(),
        "OPENAI_API_KEY": secret,
        "REDIS_URL": "rediss://default:hunter2@redis.example:6379",
        "BUILD_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [str(FLY / "deploy.sh"), "--dry-run", "--org", "acme", "ams", "sin"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert secret not in out + done.stderr and "hunter2" not in out + done.stderr
    for region in ("ams", "sin"):
        app = f"voicebots-{region}"
        toml = tmp_path / f"fly.{region}.toml"
        assert [line for line in out.splitlines() if f" {app} " in line + " "] == [
            f"+ fly apps create {app} --org acme",
            f"+ fly ips allocate-v4 --app {app} --yes",
            f"+ fly ips allocate-v6 --app {app}",
            f"+ fly secrets import --app {app} --stage <<< VOICEBOTS_PUBLIC_IP=*** "
            "REDIS_URL=*** OPENAI_API_KEY=*** ",
            f"+ fly deploy {ROOT} --app {app} --config {toml} --dockerfile {ROOT}/Dockerfile "
            "--ha=false --remote-only --wait-timeout 10m",
            f"+ fly scale count app=1 worker=1 --app {app} --region {region} --yes",
        ]
        with toml.open("rb") as file:
            rendered = tomllib.load(file)
        assert (rendered["app"], rendered["primary_region"]) == (app, region)
        assert rendered["env"] == _fly_toml()["env"]


def test_deploy_sh_refuses_bad_input(tmp_path: Path) -> None:
    run = [str(FLY / "deploy.sh"), "--dry-run"]
    env = {**_clean_env(), "BUILD_DIR": str(tmp_path)}
    for args, message in (
        ([], "name at least one region"),
        (["Amsterdam"], "region 'Amsterdam' is not a Fly.io region code"),
        (["--bogus", "ams"], "unknown option --bogus"),
    ):
        done = subprocess.run(
            [*run, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run(
        ["shellcheck", str(FLY / "app.sh"), str(FLY / "deploy.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


def test_fly_json_placeholder_parses() -> None:
    # deploy.sh --dry-run feeds this placeholder through the same parser as real output.
    placeholder = '[{"Address": "<dedicated-ipv4-of-voicebots-ams>", "Type": "v4"}]'
    assert flytoml.dedicated_ipv4(json.loads(placeholder)).startswith("<dedicated-ipv4")
