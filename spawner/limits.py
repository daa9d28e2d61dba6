"""Per-bot resource limits enforced by the kernel: cgroup v2, cgroup v1, or RLIMIT_AS.

Each bot gets its own cgroup, created **under the spawner's own cgroup** (read from
``/proc/self/cgroup``) — never elsewhere — and removed when the bot has exited:

- v2: ``<own>/voicebots-<spawner pid>/bot-<pid>`` with ``cpu.max`` (and ``cpu.max.burst``)
  and ``memory.max``. A v2 cgroup that holds processes cannot delegate controllers ("no
  internal processes"), so the spawner's group first moves its own processes into a
  ``supervisor`` leaf beside the bots.
- v1: ``<own cpu>/voicebots-<spawner pid>/bot-<pid>`` with ``cpu.cfs_quota_us`` over
  ``cpu.cfs_period_us`` (and ``cpu.cfs_burst_us``), and the same path in the memory
  hierarchy with ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``, so swap is
  no escape).
- The ``voicebots-<spawner pid>`` group holding the bots gets a CPU weight (v2
  ``cpu.weight``, v1 ``cpu.shares``) of :data:`BOTS_WEIGHT` ordinary processes. Inside it, a
  bot weighs one process once it has a call, and :data:`SPARE_WEIGHT` of one before (warming
  up or idle): a refill's warm-ups take what the calls leave of the CPU, and not their turns'
  time.
- Where no cgroup is writable: ``RLIMIT_AS`` set on the bot from outside (prlimit) to its
  address space at fork plus the memory limit. That bounds growth, not resident memory, and
  there is no CPU cap; the spawner says so at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from loguru import logger

from common.env import Environ
from common.settings import BOT_CPU, BOT_MEMORY_MB

__all__ = ["Enforcement", "Limiter", "LimitsConfig", "make_limiter"]

#: The CFS period over which a bot's CPU share is enforced (the kernel's default). The bot
#: may also save up to one period's quota while quiet and spend it in a burst (``burst``,
#: Linux 5.14+): a turn's work, or a bot's warm-up, runs on a full core for up to 100 ms
#: while the average stays at the share. Measured in ``voicebots bench``: spawn→ready
#: 204 → 109 ms p50 against a 20 ms period with its smaller burst.
CPU_PERIOD_US = 100_000
#: The weight of an ordinary process (nice 0) against a cgroup: v1 ``cpu.shares``, v2
#: ``cpu.weight``.
V1_SHARES = 1024
V2_WEIGHT = 100
#: The weight of all bots together, in ordinary processes, against the processes that share
#: the spawner's cgroup (the spawner, and signaling and the rq worker when they run beside
#: it). Only matters while the CPU is contended: then an offer's way through signaling and
#: the spawner is not queued behind every bot's share.
BOTS_WEIGHT = 0.125
#: The weight of a bot that has no call yet (warming up, or idle), against one in a call:
#: while calls keep the CPU busy, a refill's warm-ups (~60-70 ms of CPU each) wait for them
#: instead of delaying their replies. Under a saturated CPU a warm-up still gets this share,
#: so it is ready well within the heartbeat timeout.
SPARE_WEIGHT = 0.0625
#: An exited bot's group is busy until the kernel has seen its last member go.
RMDIR_ATTEMPTS = 50
RMDIR_PAUSE = 0.02


class Enforcement(StrEnum):
    CGROUP_V2 = "cgroup-v2"
    CGROUP_V1 = "cgroup-v1"
    RLIMIT = "rlimit"
    NONE = "none"


@dataclass(frozen=True)
class LimitsConfig:
    cpu: float = BOT_CPU.default
    memory_mb: int = BOT_MEMORY_MB.default
    #: Where cgroup hierarchies are mounted; tests point this at a scratch tree.
    cgroup_fs: str = "/sys/fs/cgroup"
    proc_self_cgroup: str = "/proc/self/cgroup"

    @property
    def cpu_quota_us(self) -> int:
        """CPU time a bot may use per period; as much again, saved while idle, in a burst."""
        return round(self.cpu * CPU_PERIOD_US)

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Environ) -> LimitsConfig:
        return cls(cpu=BOT_CPU.read(environ), memory_mb=BOT_MEMORY_MB.read(environ))


class Limiter:
    """Applies limits to bot processes; the base class enforces nothing."""

    enforcement = Enforcement.NONE

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config

    def describe(self) -> str:
        return "no per-bot limits"

    def apply(self, pid: int) -> None:
        """Limit a freshly forked bot, at the spare bot's CPU weight."""

    def engage(self, pid: int) -> None:
        """Give a bot that has taken a call the full weight of one process."""

    def out_of_memory(self, pid: int) -> bool:
        """Whether the kernel killed this bot for exceeding its memory limit."""
        return False

    async def release(self, pid: int) -> None:
        """Forget an exited bot: end what it left running and remove its cgroup.

        Never raises; safe to call twice.
        """

    def close(self) -> None:
        """Remove what the limiter created. Safe to call twice."""

    def status(self) -> dict[str, object]:
        return {
            "enforcement": self.enforcement.value,
            "cpu": self.config.cpu,
            "memory_mb": self.config.memory_mb,
        }


class RlimitLimiter(Limiter):
    enforcement = Enforcement.RLIMIT

    def describe(self) -> str:
        return (
            f"no writable cgroup: bots limited by RLIMIT_AS (+{self.config.memory_mb} MB of "
            "address space each), with no CPU cap"
        )

    def apply(self, pid: int) -> None:
        base = _vm_size(pid)
        limit = base + self.config.memory_bytes
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))


class _CgroupLimiter(Limiter):
    def __init__(self, config: LimitsConfig, parents: dict[str, Path]) -> None:
        super().__init__(config)
        self._parents = parents  # controller → voicebots-<pid> directory
        self._bots: dict[int, list[Path]] = {}

    def describe(self) -> str:
        where = ", ".join(str(p) for p in dict.fromkeys(self._parents.values()))
        return (
            f"bots limited by {self.enforcement.value}: {self.config.cpu} CPU, "
            f"{self.config.memory_mb} MB each, under {where}, weighing "
            f"{BOTS_WEIGHT} of a process together"
        )

    async def release(self, pid: int) -> None:
        # A bot killed mid-call can leave children (an espeak-ng, say) in its group; they
        # die with it, and the group can be removed once the kernel has seen them go.
        for directory in self._bots.pop(pid, []):
            for attempt in range(RMDIR_ATTEMPTS):
                _kill_members(directory)
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if attempt == RMDIR_ATTEMPTS - 1:
                        logger.warning(f"could not remove {directory}: {exc}")
                    else:
                        await asyncio.sleep(RMDIR_PAUSE)

    def close(self) -> None:
        for pid, directories in list(self._bots.items()):
            for directory in directories:
                _kill_members(directory)
            del self._bots[pid]
        for parent in dict.fromkeys(self._parents.values()):
            _remove_tree(parent)

    def _group(self, controller: str, pid: int) -> Path:
        """The bot's own group under ``controller``."""
        return self._parents[controller] / f"bot-{pid}"

    def _make(self, controller: str, pid: int) -> Path:
        directory = self._group(controller, pid)
        directory.mkdir(exist_ok=True)
        self._bots.setdefault(pid, []).append(directory)
        return directory


class CgroupV1Limiter(_CgroupLimiter):
    enforcement = Enforcement.CGROUP_V1

    def apply(self, pid: int) -> None:
        cpu = self._make("cpu", pid)
        _write(cpu / "cpu.shares", _v1_shares(SPARE_WEIGHT))
        _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
        _write(cpu / "cpu.cfs_quota_us", self.config.cpu_quota_us)
        with contextlib.suppress(OSError):  # kernels before 5.14 have no burst
            _write(cpu / "cpu.cfs_burst_us", self.config.cpu_quota_us)
        memory = self._make("memory", pid)
        # Charges the bot's pages to its own group as it moves in.
        with contextlib.suppress(OSError):
            _write(memory / "memory.move_charge_at_immigrate", 3)
        _write(memory / "memory.limit_in_bytes", self.config.memory_bytes)
        with contextlib.suppress(OSError):  # absent without swap accounting
            _write(memory / "memory.memsw.limit_in_bytes", self.config.memory_bytes)
        for directory in (cpu, memory):
            _write(directory / "cgroup.procs", pid)

    def engage(self, pid: int) -> None:
        _write(self._group("cpu", pid) / "cpu.shares", V1_SHARES)

    def out_of_memory(self, pid: int) -> bool:
        control = self._group("memory", pid) / "memory.oom_control"
        return _counter(control, "oom_kill") > 0


class CgroupV2Limiter(_CgroupLimiter):
    enforcement = Enforcement.CGROUP_V2

    def apply(self, pid: int) -> None:
        directory = self._make("unified", pid)
        _write(directory / "cpu.weight", _v2_weight(SPARE_WEIGHT))
        _write(directory / "cpu.max", f"{self.config.cpu_quota_us} {CPU_PERIOD_US}")
        with contextlib.suppress(OSError):  # kernels before 5.14 have no burst
            _write(directory / "cpu.max.burst", self.config.cpu_quota_us)
        _write(directory / "memory.max", self.config.memory_bytes)
        with contextlib.suppress(OSError):
            _write(directory / "memory.swap.max", 0)
        _write(directory / "cgroup.procs", pid)

    def engage(self, pid: int) -> None:
        _write(self._group("unified", pid) / "cpu.weight", V2_WEIGHT)

    def out_of_memory(self, pid: int) -> bool:
        events = self._group("unified", pid) / "memory.events"
        return _counter(events, "oom_kill") > 0


def make_limiter(config: LimitsConfig) -> Limiter:
    """The strongest enforcement this host allows: cgroups where one is writable, else
    ``RLIMIT_AS`` (the spawner's start-up line says which)."""
    try:
        return _cgroup_limiter(config)
    except OSError as exc:
        logger.warning(f"per-bot cgroups unavailable: {exc}")
    return RlimitLimiter(config)


def _own_cgroups(config: LimitsConfig) -> tuple[str | None, dict[str, str]]:
    """(v2 path, {v1 controller: path}) of this process, from /proc/self/cgroup."""
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in Path(config.proc_self_cgroup).read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            unified = path
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return unified, v1


def _cgroup_limiter(config: LimitsConfig) -> Limiter:
    fs = Path(config.cgroup_fs)
    unified, v1 = _own_cgroups(config)
    tag = f"voicebots-{os.getpid()}"
    v2_root = fs if (fs / "cgroup.controllers").exists() else fs / "unified"
    if unified is not None and _has_controllers(v2_root, ("cpu", "memory")):
        own = v2_root / unified.lstrip("/")
        _sweep_stale(own)
        parent = _delegate_v2(own, tag)
        _write(parent / "cpu.weight", _v2_weight(BOTS_WEIGHT))
        return CgroupV2Limiter(config, {"unified": parent})
    if "cpu" in v1 and "memory" in v1:
        parents = {}
        for controller in ("cpu", "memory"):
            own = _v1_mount(fs, controller) / v1[controller].lstrip("/")
            _sweep_stale(own)
            parent = own / tag
            parent.mkdir(exist_ok=True)
            parents[controller] = parent
        _write(parents["cpu"] / "cpu.shares", _v1_shares(BOTS_WEIGHT))
        return CgroupV1Limiter(config, parents)
    raise OSError("no cgroup hierarchy with both cpu and memory controllers")


def _v1_shares(processes: float) -> int:
    """v1 ``cpu.shares`` worth this many ordinary processes, within the kernel's range."""
    return min(262_144, max(2, round(V1_SHARES * processes)))


def _v2_weight(processes: float) -> int:
    """v2 ``cpu.weight`` worth this many ordinary processes, within the kernel's range."""
    return min(10_000, max(1, round(V2_WEIGHT * processes)))


def _v1_mount(fs: Path, controller: str) -> Path:
    for name in (controller, f"{controller},cpuacct", f"cpuacct,{controller}"):
        if (fs / name).is_dir():
            return fs / name
    raise OSError(f"no cgroup v1 mount for {controller} under {fs}")


def _has_controllers(root: Path, wanted: tuple[str, ...]) -> bool:
    try:
        available = (root / "cgroup.controllers").read_text().split()
    except OSError:
        return False
    return all(name in available for name in wanted)


def _delegate_v2(own: Path, tag: str) -> Path:
    """Make ``own/tag`` a cgroup whose children may have cpu and memory limits."""
    enabled = (own / "cgroup.subtree_control").read_text().split()
    if not {"cpu", "memory"} <= set(enabled):
        procs = [p for p in (own / "cgroup.procs").read_text().split() if p]
        if procs:
            # No internal processes: this group's own members move to a leaf first.
            leaf = own / "supervisor"
            leaf.mkdir(exist_ok=True)
            for pid in procs:
                with contextlib.suppress(ProcessLookupError, OSError):
                    _write(leaf / "cgroup.procs", pid)
        _write(own / "cgroup.subtree_control", "+cpu +memory")
    parent = own / tag
    parent.mkdir(exist_ok=True)
    _write(parent / "cgroup.subtree_control", "+cpu +memory")
    return parent


def _sweep_stale(own: Path) -> None:
    """Remove the empty groups of earlier spawners here that died without cleaning up."""
    for stale in own.glob("voicebots-*"):
        pid = stale.name.removeprefix("voicebots-")
        if pid.isdigit() and not _alive(int(pid)):
            _remove_tree(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    return True


def _remove_tree(parent: Path) -> None:
    """rmdir the ``bot-*`` groups under ``parent``, then ``parent``; busy ones stay."""
    for child in parent.glob("bot-*"):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        parent.rmdir()


def _kill_members(directory: Path) -> None:
    """SIGKILL every process still in a bot's group (v2 has one file for that)."""
    if (directory / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            _write(directory / "cgroup.kill", 1)
        return
    try:
        members = (directory / "cgroup.procs").read_text().split()
    except OSError:
        return
    for member in members:
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(member), signal.SIGKILL)


def _write(path: Path, value: object) -> None:
    with open(path, "w") as handle:
        handle.write(f"{value}\n")


def _counter(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _vm_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no VmSize for pid {pid}")
