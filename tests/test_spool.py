"""The local spool, on real files: what a record keeps through it, and after a crash."""

from __future__ import annotations

import json
from pathlib import Path

from common.record import CallRecord, CallStatus, TranscriptLine
from spawner.spool import Spool

LINES = (
    TranscriptLine(role="user", text="hello there", ts=101.0),
    TranscriptLine(role="assistant", text="hi, how can I help?", ts=102.5),
)


def test_a_spooled_record_comes_back_whole(tmp_path: Path) -> None:
    record = CallRecord(
        session_id="s-1",
        status=CallStatus.COMPLETED,
        started_at=100.0,
        ended_at=110.0,
        end_reason="hangup",
        transcript=LINES,
        bot_pid=4242,
        metrics={"turns": [{"turn": 1, "audio_out_ms": 420.0}]},
        logs=({"message": "call ended", "level": "INFO"},),
        owner="a1b2c3d4e5f6a7b8c9d0e1f2",
    )
    Spool(str(tmp_path)).put(record)
    # Read back by another Spool on the same directory, as a restarted spawner would.
    [(path, again)] = Spool(str(tmp_path)).pending()
    assert again == record
    assert path.name == "s-1.json"


def test_a_journal_left_by_a_crash_becomes_a_failed_record_of_the_same_owner(
    tmp_path: Path,
) -> None:
    before = Spool(str(tmp_path))
    before.open_journal("s-2", started_at=200.0, owner="0f1e2d3c4b5a69788796a5b4")
    for line in LINES:
        before.journal("s-2", line)
    # A line torn by the crash is skipped, not fatal.
    with (tmp_path / "live" / "s-2.jsonl").open("a") as journal:
        journal.write('{"role": "user", "te')

    [orphan] = Spool(str(tmp_path)).orphans()
    assert orphan.session_id == "s-2"
    assert orphan.status is CallStatus.FAILED and orphan.end_reason == "spawner_lost"
    assert orphan.started_at == 200.0
    assert orphan.transcript == LINES
    assert orphan.owner == "0f1e2d3c4b5a69788796a5b4"


def test_a_journal_of_an_open_call_is_not_an_orphan(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    spool.open_journal("s-3", started_at=300.0)
    assert spool.orphans() == []
    spool.close_journal("s-3")
    assert not (tmp_path / "live" / "s-3.jsonl").exists()
    header = json.dumps({"started_at": 1.0, "owner": None})
    (tmp_path / "live" / "s-4.jsonl").write_text(header + "\n")
    [orphan] = spool.orphans()
    assert orphan.owner is None and orphan.transcript == ()
