"""What the kernel says about a process: CPU time and memory, read from ``/proc``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Memory", "cpu_seconds", "live_cpu_seconds", "memory", "parent_pid", "total_cpu_seconds"]

_TICKS = os.sysconf("SC_CLK_TCK")
_MB = 1024.0


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may hold spaces or ")".
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads) so far."""
    fields = _stat_fields(pid)
    # After the name: state is index 0, so utime (field 14) is 11 and stime (15) is 12.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def live_cpu_seconds(pid: int) -> float:
    """CPU seconds of the threads of ``pid`` alive now, to the nanosecond.

    :func:`cpu_seconds` counts in clock ticks (10 ms at the usual 100 Hz): right for a call's
    minutes, too coarse for the few milliseconds a bot spends warming up, which would often
    read 0. The scheduler's per-thread run time (``schedstat``) is exact, but forgets threads
    that have exited; a warm idle bot's threads are all still there.
    """
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended while we read
    return total_ns / 1e9


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """The sum of :func:`cpu_seconds`; a process that has exited counts as 0."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def parent_pid(pid: int) -> int:
    return int(_stat_fields(pid)[1])


@dataclass(frozen=True)
class Memory:
    """One process's memory in MB (``smaps_rollup``).

    ``pss`` shares each page among the processes mapping it; ``uss`` is what only this
    process holds (private clean + dirty), the memory freed if it exited.
    """

    rss: float
    pss: float
    uss: float
    anonymous: float


def memory(pid: int) -> Memory:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[name] = int(parts[0])
    return Memory(
        rss=values["Rss"] / _MB,
        pss=values["Pss"] / _MB,
        uss=(values["Private_Clean"] + values["Private_Dirty"]) / _MB,
        anonymous=values.get("Anonymous", 0) / _MB,
    )
