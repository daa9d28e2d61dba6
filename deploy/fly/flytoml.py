"""Renders the ``fly.toml`` of one regional voicebots app, and parses flyctl output for
``deploy.sh``.

    python deploy/fly/flytoml.py render --app voicebots-ams --region ams [--out FILE]
        [--ports 40000-40031] [--max-bots 7] [--min-idle 2] [--kill-timeout 300]
    fly ips list --app voicebots-ams --json | python deploy/fly/flytoml.py dedicated-ipv4

The Machine's settings are the ``[env]`` written here, and everything else in the file — one
UDP service per port, the HTTP port, the drain timing, the VM size — is derived from that
``[env]`` through the config classes the processes themselves read it with (``SpawnerConfig``,
``SignalingConfig``), so the file cannot promise what the code does not do. Run it with the
project's virtualenv (``.venv/bin/python``), which has those classes' dependencies.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from media.ports import PortRange  # noqa: E402
from signaling.config import SignalingConfig  # noqa: E402
from spawner.config import SpawnerConfig  # noqa: E402

__all__ = ["Plan", "VmSize", "main", "plan", "render", "vm_size"]

#: Fly.io stops a Machine at most this long after its kill signal.
FLY_MAX_KILL_TIMEOUT = 300
#: Between the end of the drain and SIGKILL: ending the calls still live, writing their
#: records to Redis, stopping signaling.
DRAIN_MARGIN = 20
#: Fly.io's CPU counts, and its performance Machines' memory per CPU (MB): at least 2048,
#: at most 8192, in steps of 2048.
FLY_CPUS = (1, 2, 4, 8, 16)
FLY_MB_PER_CPU = (2048, 8192)
FLY_MB_STEP = 2048
#: Beyond the bots: signaling, the spawner and the zygote (measured idle: ~0.2 GB PSS
#: together, 0.37 GB RSS), with headroom, and CPU for the offer bursts they handle.
OVERHEAD_CPUS = 0.5
OVERHEAD_MB = 1024
DEFAULT_PORTS = PortRange(40000, 40031)
#: The app process group: the spawner (with its bots) and signaling, drained in that order.
APP_COMMAND = "/app/deploy/fly/app.sh"
WORKER_COMMAND = "voicebots worker"


@dataclass(frozen=True)
class VmSize:
    cpus: int
    memory_mb: int

    @property
    def name(self) -> str:
        return f"performance-{self.cpus}x, {self.memory_mb} MB"


def vm_size(bots: int, bot_cpus: float, bot_memory_mb: int) -> VmSize:
    """The smallest performance Machine for ``bots`` bots at their cgroup limits, plus the
    overhead. Shared CPUs are not an option: their throttling would cut audio."""
    need_cpus = bots * bot_cpus + OVERHEAD_CPUS
    cpus = next((c for c in FLY_CPUS if c >= need_cpus), None)
    if cpus is None:
        raise ValueError(f"{bots} bots need {need_cpus:g} vCPUs: more than one Machine has")
    need_mb = bots * bot_memory_mb + OVERHEAD_MB
    memory_mb = max(math.ceil(need_mb / FLY_MB_STEP) * FLY_MB_STEP, cpus * FLY_MB_PER_CPU[0])
    if memory_mb > cpus * FLY_MB_PER_CPU[1]:
        raise ValueError(f"{bots} bots need {need_mb} MB: more than {cpus} CPUs may have")
    return VmSize(cpus, memory_mb)


@dataclass(frozen=True)
class Plan:
    """One regional app: its settings and what follows from them."""

    app: str
    region: str
    env: dict[str, str]
    spawner: SpawnerConfig
    signaling: SignalingConfig
    ports: PortRange
    kill_timeout: int
    vm: VmSize


def plan(
    app: str,
    region: str,
    ports: PortRange = DEFAULT_PORTS,
    max_bots: int = 7,
    min_idle: int = 2,
    kill_timeout: int = FLY_MAX_KILL_TIMEOUT,
) -> Plan:
    if not 0 < kill_timeout <= FLY_MAX_KILL_TIMEOUT:
        raise ValueError(f"Fly.io's kill_timeout is at most {FLY_MAX_KILL_TIMEOUT} s")
    if kill_timeout <= DRAIN_MARGIN:
        raise ValueError(f"kill_timeout must exceed the {DRAIN_MARGIN} s left after draining")
    env = {
        # TCP binds every address; UDP binds fly-global-services, or replies leave from the
        # wrong address (Fly.io's UDP guide).
        "VOICEBOTS_HOST": "0.0.0.0",
        "VOICEBOTS_PORT": "7860",
        "VOICEBOTS_BIND_HOST": "fly-global-services",
        # Fly.io forwards UDP without rewriting ports: bots bind the ports declared below.
        "VOICEBOTS_UDP_PORTS": str(ports),
        "VOICEBOTS_MAX_BOTS": str(max_bots),
        "VOICEBOTS_MIN_IDLE": str(min_idle),
        "VOICEBOTS_DRAIN_TIMEOUT": str(kill_timeout - DRAIN_MARGIN),
    }
    spawner = SpawnerConfig.from_env(env)
    media_ports = spawner.bot.media.udp_ports
    assert media_ports is not None
    # With one bind address and BUNDLE, a bot holds one UDP socket while it is in a call;
    # a renegotiation with restart_pc briefly holds a second.
    if len(media_ports) < 2 * spawner.max_bots:
        raise ValueError(
            f"{len(media_ports)} UDP ports are too few for {spawner.max_bots} bots: "
            f"give at least {2 * spawner.max_bots}"
        )
    return Plan(
        app=app,
        region=region,
        env=env,
        spawner=spawner,
        signaling=SignalingConfig.from_env(env),
        ports=media_ports,
        kill_timeout=kill_timeout,
        vm=vm_size(spawner.max_bots, spawner.limits.cpu, spawner.limits.memory_mb),
    )


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    # A JSON string is a valid TOML basic string for everything written here.
    return json.dumps(str(value))


def _table(header: str, values: dict[str, Any], indent: str = "") -> list[str]:
    lines = [f"{indent}{header}"] if header else []
    lines += [f"{indent}  {key} = {_value(value)}" for key, value in values.items()]
    return lines


def render(p: Plan, command: str) -> str:
    """The fly.toml text of plan ``p``; ``command`` is how it was generated (for the header)."""
    lines = [
        "# Generated by deploy/fly/flytoml.py; change the command, not this file:",
        f"#   {command}",
        "# One regional app: its Machine in the `app` group runs the spawner (with its bots) and",
        "# signaling; one in the `worker` group runs the rq worker. VOICEBOTS_PUBLIC_IP (this",
        "# app's dedicated IPv4) is a secret that deploy.sh sets. See deploy/fly/README.md.",
        "",
        f"app = {_value(p.app)}",
        f"primary_region = {_value(p.region)}",
        "# SIGTERM starts the spawner's drain (no new calls; live ones may go on for",
        f"# VOICEBOTS_DRAIN_TIMEOUT = {p.spawner.drain_timeout:g} s); Fly.io kills the Machine"
        f" {p.kill_timeout} s after it.",
        'kill_signal = "SIGTERM"',
        f"kill_timeout = {p.kill_timeout}",
        "",
        *_table("[deploy]", {"strategy": "rolling"}),
        "",
        *_table("[env]", dict(p.env)),
        "",
        *_table("[processes]", {"app": APP_COMMAND, "worker": WORKER_COMMAND}),
        "",
        "# A call's audio never passes Fly's proxy, so a Machine in calls looks idle to it:",
        "# never stop it automatically.",
        *_table(
            "[http_service]",
            {
                "processes": ["app"],
                "internal_port": p.signaling.port,
                "force_https": True,
                "auto_stop_machines": False,
                "auto_start_machines": False,
                "min_machines_running": 1,
            },
        ),
        "",
        "  # Liveness, for routing. Readiness (/readyz) is a check of its own below: full or",
        "  # draining, signaling must still answer (503 + Retry-After, session status, hang-up).",
        *_table(
            "[[http_service.checks]]",
            {
                "grace_period": "30s",
                "interval": "10s",
                "timeout": "2s",
                "method": "GET",
                "path": "/healthz",
            },
            indent="  ",
        ),
        "",
        "# Ready = accepting calls with a bot free; deploys wait for it. 503 while draining/full.",
        *_table(
            "[checks.readyz]",
            {
                "type": "http",
                "processes": ["app"],
                "port": p.signaling.port,
                "method": "GET",
                "path": "/readyz",
                "grace_period": "60s",
                "interval": "10s",
                "timeout": "3s",
            },
        ),
        "",
        f"# Bots: {p.spawner.max_bots} x ({p.spawner.limits.cpu:g} vCPU, "
        f"{p.spawner.limits.memory_mb} MB) + overhead ({OVERHEAD_CPUS:g} vCPU, "
        f"{OVERHEAD_MB} MB) -> {p.vm.name}.",
        *_table(
            "[[vm]]",
            {
                "processes": ["app"],
                "cpu_kind": "performance",
                "cpus": p.vm.cpus,
                "memory": f"{p.vm.memory_mb}mb",
            },
        ),
        "",
        *_table(
            "[[vm]]",
            {
                "processes": ["worker"],
                "cpu_kind": "shared",
                "cpus": 1,
                "memory": "1024mb",
            },
        ),
        "",
        f"# UDP: one service per port of VOICEBOTS_UDP_PORTS={p.ports}, internal == external",
        "# (Fly.io rewrites addresses, never ports). UDP needs the app's dedicated IPv4.",
    ]
    for port in p.ports:
        lines += [
            "",
            *_table(
                "[[services]]",
                {
                    "processes": ["app"],
                    "protocol": "udp",
                    "internal_port": port,
                    "auto_stop_machines": False,
                    "auto_start_machines": False,
                },
            ),
            *_table("[[services.ports]]", {"port": port}, indent="  "),
        ]
    return "\n".join(lines) + "\n"


def dedicated_ipv4(ips: Any) -> str:
    """The dedicated IPv4 in ``fly ips list --json`` output (key case varies by version)."""
    found = []
    for entry in ips if isinstance(ips, list) else []:
        fields = {str(k).lower(): v for k, v in entry.items()} if isinstance(entry, dict) else {}
        if str(fields.get("type", "")).lower() == "v4":
            found.append(str(fields.get("address") or fields.get("ip") or ""))
    if len(found) != 1 or not found[0]:
        raise ValueError(f"expected one dedicated IPv4 address, found {found or 'none'}")
    return found[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flytoml.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("render", help="write the fly.toml of one regional app")
    make.add_argument("--app", required=True)
    make.add_argument("--region", required=True)
    make.add_argument("--ports", type=PortRange.parse, default=DEFAULT_PORTS)
    make.add_argument("--max-bots", type=int, default=7)
    make.add_argument("--min-idle", type=int, default=2)
    make.add_argument("--kill-timeout", type=int, default=FLY_MAX_KILL_TIMEOUT)
    make.add_argument("--out", type=Path, help="file to write (default: stdout)")
    sub.add_parser("dedicated-ipv4", help="print the dedicated IPv4 of `fly ips list --json`")
    args = parser.parse_args(argv)
    try:
        if args.command == "dedicated-ipv4":
            print(dedicated_ipv4(json.load(sys.stdin)))
            return 0
        p = plan(args.app, args.region, args.ports, args.max_bots, args.min_idle, args.kill_timeout)
    except ValueError as exc:
        print(f"flytoml.py: {exc}", file=sys.stderr)
        return 2
    command = (
        f"python deploy/fly/flytoml.py render --app {p.app} --region {p.region} "
        f"--ports {p.ports} --max-bots {p.spawner.max_bots} --min-idle {p.spawner.min_idle} "
        f"--kill-timeout {p.kill_timeout}"
    )
    text = render(p, command)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
