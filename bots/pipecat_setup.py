"""voicebots' file in pipecat's ``PIPECAT_SETUP_FILES``: each pipeline worker a bot file sets
up is observed for the call's record (see :mod:`bots.recording`).

pipecat imports this file by its path, as a module of its own, once per process; the state it
acts on lives in :mod:`bots.recording`, which the bot process imported first.
"""

from __future__ import annotations

from typing import Any

from bots.recording import attach_current


async def setup_pipeline_worker(worker: Any) -> None:
    attach_current(worker)


async def setup_worker_runner(runner: Any) -> None:
    """Nothing per runner: the record is read from the pipeline workers."""
