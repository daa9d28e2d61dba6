"""The upstream libraries voicebots reaches into, checked where a server starts.

Each library whose internals voicebots reaches has one adapter module, pinned to the releases
it is tested with, and a probe: :mod:`bots.pipecat_adapter` for pipecat,
:mod:`media.aiortc_adapter` for aiortc and aioice. A release outside the tested range, or one
that moved an internal voicebots reaches, stops the server at start-up with a message saying
which, instead of failing calls later: the spawner runs :func:`check_upstream` before its
zygote forks any bot, and ``voicebots up`` runs :func:`upstream_problem` before it starts
anything.
"""

from __future__ import annotations

import subprocess
import sys

__all__ = ["check_upstream", "upstream_problem"]


def check_upstream() -> None:
    """Probe every adapter in this process; raise ``ValueError`` (the command's "cannot
    start" path, exit status 2) with the first problem found."""
    # Imported here: upstream_problem's callers keep pipecat and aiortc out of their process.
    try:
        from bots import pipecat_adapter
        from media import aiortc_adapter
    except ImportError as missing:
        raise ValueError(
            f"{missing}: install voicebots with its dependencies (pip install voicebots)"
        ) from missing

    for probe in (pipecat_adapter.probe, aiortc_adapter.probe):
        try:
            probe()
        except RuntimeError as problem:
            raise ValueError(str(problem)) from problem


def upstream_problem() -> str | None:
    """What :func:`check_upstream` finds, probed in a fresh interpreter (whose imports stay
    out of the caller's process); ``None`` when nothing is wrong."""
    checked = subprocess.run(
        [sys.executable, "-m", "bots.compat"], capture_output=True, text=True, check=False
    )
    if checked.returncode == 0:
        return None
    # The problem is on stdout: pipecat logs to stderr as it is imported.
    return checked.stdout.strip() or checked.stderr.strip() or "the upstream probe failed"


if __name__ == "__main__":
    try:
        check_upstream()
    except ValueError as problem:
        print(problem)
        sys.exit(2)
