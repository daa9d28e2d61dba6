"""Per-bot cgroups on this host's real hierarchy: what a dead bot leaves behind is cleaned up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spawner.limits import Enforcement, LimitsConfig, make_limiter

# A stand-in bot: waits to be limited, starts a child (as a bot starts espeak-ng), reports it.
PARENT = """
import subprocess, sys, time
sys.stdin.readline()
child = subprocess.Popen(["sleep", "60"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _cpu_limits(groups: list[Path]) -> dict[str, int]:
    """Quota, period and (where the kernel has it, 5.14+) burst in µs, from v2's cpu.max and
    cpu.max.burst or v1's cfs files."""
    for group in groups:
        if (group / "cpu.max").exists():
            quota, period = (group / "cpu.max").read_text().split()
            limits = {"quota": int(quota), "period": int(period)}
            burst = group / "cpu.max.burst"
        elif (group / "cpu.cfs_quota_us").exists():
            limits = {
                "quota": int((group / "cpu.cfs_quota_us").read_text()),
                "period": int((group / "cpu.cfs_period_us").read_text()),
            }
            burst = group / "cpu.cfs_burst_us"
        else:
            continue
        if burst.exists():
            limits["burst"] = int(burst.read_text())
        return limits
    raise AssertionError(f"no CPU limit in {groups}")


def _cpu_weight(groups: list[Path]) -> int:
    """A group's CPU weight, from v2's cpu.weight or v1's cpu.shares."""
    for group in groups:
        for name in ("cpu.weight", "cpu.shares"):
            if (group / name).exists():
                return int((group / name).read_text())
    raise AssertionError(f"no CPU weight in {groups}")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); its state in /proc tells.
    status = Path(f"/proc/{pid}/status").read_text()
    return "\nState:\tZ" in status


def test_a_killed_bot_leaves_no_process_and_no_cgroup() -> None:
    limiter = make_limiter(LimitsConfig())
    if limiter.enforcement not in (Enforcement.CGROUP_V1, Enforcement.CGROUP_V2):
        pytest.fail(f"this host should allow per-bot cgroups, got {limiter.describe()}")
    bot = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        limiter.apply(bot.pid)
        assert bot.stdin is not None and bot.stdout is not None
        bot.stdin.write("go\n")
        bot.stdin.flush()
        child = int(bot.stdout.readline())
        groups = [p for p in Path(limiter.config.cgroup_fs).rglob(f"bot-{bot.pid}") if p.is_dir()]
        assert groups, "the bot's cgroup was not created"
        assert all(str(child) in (g / "cgroup.procs").read_text().split() for g in groups)
        limits = _cpu_limits(groups)
        assert (limits["quota"], limits["period"]) == (50_000, 100_000)
        # All bots together weigh an eighth of a process (1024 v1 shares, 100 v2 weight).
        assert _cpu_weight([g.parent for g in groups]) in (128, 12)
        # A bot without a call weighs a sixteenth of one in a call.
        assert _cpu_weight(groups) in (64, 6)
        limiter.engage(bot.pid)
        assert _cpu_weight(groups) in (1024, 100)
        assert limits.get("burst", 50_000) == 50_000  # absent only before Linux 5.14

        bot.kill()  # the child is orphaned, still in the bot's group
        bot.wait()
        asyncio.run(limiter.release(bot.pid))

        deadline = time.monotonic() + 5
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(child), "the bot's child outlived it"
        assert not [g for g in groups if g.exists()], "the bot's cgroup was left behind"
    finally:
        bot.kill()
        bot.wait()
        limiter.close()
    parents = list(Path(limiter.config.cgroup_fs).rglob(f"voicebots-{os.getpid()}"))
    assert not parents, f"the limiter's own groups were left behind: {parents}"
