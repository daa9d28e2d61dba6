"""The local spool: call records that could not reach Redis yet, and journals of live calls.

``pending/<session>.json``  a finished record whose write to Redis failed; delivered (and its
                            post-call job enqueued) when Redis answers again, also after a
                            restart of the spawner.
``live/<session>.jsonl``    the transcript lines of a call in progress, one JSON object a line.
                            A journal still there when the spawner starts belongs to a call the
                            previous spawner never finished; it becomes a ``failed`` record.

Files are written to a temporary name and renamed, so a crash never leaves half a record.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import IO

from loguru import logger

from common.record import CallRecord, CallStatus, TranscriptLine

__all__ = ["Spool"]


class Spool:
    def __init__(self, directory: str) -> None:
        self._root = Path(directory)
        self._pending = self._root / "pending"
        self._live = self._root / "live"
        self._pending.mkdir(parents=True, exist_ok=True)
        self._live.mkdir(parents=True, exist_ok=True)
        self._journals: dict[str, IO[str]] = {}

    # -- finished records -----------------------------------------------------------------

    def put(self, record: CallRecord) -> Path:
        path = self._pending / f"{_safe(record.session_id)}.json"
        payload = {**record.to_json(), "spooled_at": time.time()}
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        return path

    def pending(self) -> list[tuple[Path, CallRecord]]:
        records = []
        for path in sorted(self._pending.glob("*.json")):
            try:
                records.append((path, CallRecord.from_json(json.loads(path.read_text()))))
            except (OSError, ValueError, KeyError) as exc:
                logger.error(f"spool: unreadable {path.name}: {exc}; left in place")
        return records

    def count(self) -> int:
        """Records waiting, without reading them (a metrics scrape asks often)."""
        return sum(1 for _ in self._pending.glob("*.json"))

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    # -- journals of live calls -----------------------------------------------------------

    def journal(self, session_id: str, line: TranscriptLine) -> None:
        handle = self._journals.get(session_id)
        if handle is None:
            handle = open(self._live / f"{_safe(session_id)}.jsonl", "a")
            self._journals[session_id] = handle
        handle.write(json.dumps(line.to_json()) + "\n")
        handle.flush()

    def open_journal(self, session_id: str, started_at: float, owner: str | None = None) -> None:
        handle = open(self._live / f"{_safe(session_id)}.jsonl", "a")
        handle.write(json.dumps({"started_at": started_at, "owner": owner}) + "\n")
        handle.flush()
        self._journals[session_id] = handle

    def close_journal(self, session_id: str) -> None:
        handle = self._journals.pop(session_id, None)
        if handle is not None:
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            (self._live / f"{_safe(session_id)}.jsonl").unlink()

    def orphans(self) -> list[CallRecord]:
        """Records for calls whose journal a previous spawner left behind."""
        records = []
        for path in sorted(self._live.glob("*.jsonl")):
            if path.stem in self._journals:
                continue
            started_at, owner, lines = path.stat().st_mtime, None, []
            for raw in path.read_text().splitlines():
                try:
                    item = json.loads(raw)
                    if "started_at" in item:
                        started_at = float(item["started_at"])
                        owner = str(item["owner"]) if item.get("owner") else None
                    else:
                        lines.append(TranscriptLine.from_json(item))
                except (ValueError, TypeError):
                    continue  # a line torn by the crash
            records.append(
                CallRecord(
                    session_id=path.stem,
                    status=CallStatus.FAILED,
                    started_at=started_at,
                    ended_at=path.stat().st_mtime,
                    end_reason="spawner_lost",
                    transcript=tuple(lines),
                    owner=owner,
                )
            )
        return records

    def forget_orphan(self, session_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._live / f"{_safe(session_id)}.jsonl").unlink()

    def close(self) -> None:
        for handle in self._journals.values():
            handle.close()
        self._journals.clear()


def _safe(session_id: str) -> str:
    if not session_id or not all(c.isalnum() or c in "-_" for c in session_id):
        raise ValueError(f"session id {session_id!r} is not safe as a file name")
    return session_id
