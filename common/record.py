"""The call record: what is kept of a call in Redis after it ends.

Written by the spawner, read by signaling and the post-call worker: hash
``voicebots:call:{session_id}`` with ``status``, ``end_reason``, ``started_at``, ``ended_at``,
``transcript`` (JSON list of ``{"role", "text", "ts"}``), ``bot_pid``, ``metrics``, ``logs``,
``owner``, later ``summary`` and ``webhook_status`` from the post-call job; one job per ended
call on the rq queue ``voicebots``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "QUEUE_NAME",
    "CallRecord",
    "CallStatus",
    "TranscriptLine",
    "call_key",
    "parse_transcript",
]

QUEUE_NAME = "voicebots"
KEY_PREFIX = "voicebots:call:"


def call_key(session_id: str) -> str:
    return f"{KEY_PREFIX}{session_id}"


class CallStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class TranscriptLine:
    role: str  # "user" | "assistant"
    text: str
    ts: float

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "ts": self.ts}

    @classmethod
    def from_json(cls, data: Any) -> TranscriptLine:
        if not isinstance(data, dict):
            raise ValueError(f"transcript line must be an object, got {type(data).__name__}")
        role, text, ts = data.get("role"), data.get("text"), data.get("ts")
        if role not in ("user", "assistant"):
            raise ValueError(f"transcript role must be 'user' or 'assistant', got {role!r}")
        if not isinstance(text, str):
            raise ValueError("transcript text must be a string")
        if not isinstance(ts, int | float):
            raise ValueError("transcript ts must be a number")
        return cls(role=role, text=text, ts=float(ts))


def parse_transcript(raw: str | bytes | None) -> list[TranscriptLine]:
    if not raw:
        return []
    data = json.loads(raw)
    if not isinstance(data, list):
        raise ValueError("transcript must be a JSON list")
    return [TranscriptLine.from_json(item) for item in data]


@dataclass(frozen=True)
class CallRecord:
    session_id: str
    status: CallStatus
    started_at: float
    ended_at: float | None = None
    end_reason: str = ""
    transcript: tuple[TranscriptLine, ...] = field(default_factory=tuple)
    summary: str = ""
    #: The process that served the call; its logs carry this pid.
    bot_pid: int | None = None
    #: ``{"turns": [per-turn latency milestones, ms]}`` (see :mod:`bots.turn_metrics`).
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The bot's last log lines (bounded), so a failed call can be read after its process.
    logs: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: Opaque id of the API key that started the call (signaling's ``owner_id``), if any:
    #: only that key (or the session's token) may read the record back.
    owner: str | None = None

    def to_hash(self) -> dict[str, str]:
        """Fields as written to Redis (every value a string)."""
        fields = {
            "status": self.status.value,
            "started_at": repr(self.started_at),
            "end_reason": self.end_reason,
            "transcript": json.dumps([line.to_json() for line in self.transcript]),
        }
        if self.ended_at is not None:
            fields["ended_at"] = repr(self.ended_at)
        if self.summary:
            fields["summary"] = self.summary
        if self.bot_pid is not None:
            fields["bot_pid"] = str(self.bot_pid)
        if self.metrics:
            fields["metrics"] = json.dumps(self.metrics)
        if self.logs:
            fields["logs"] = json.dumps(list(self.logs))
        if self.owner is not None:
            fields["owner"] = self.owner
        return fields

    @classmethod
    def from_hash(cls, session_id: str, data: Mapping[Any, Any]) -> CallRecord:
        if "status" not in data:
            raise ValueError(f"call record {session_id} has no status")
        ended = data.get("ended_at")
        return cls(
            session_id=session_id,
            status=CallStatus(data["status"]),
            started_at=float(data.get("started_at") or 0.0),
            ended_at=float(ended) if ended else None,
            end_reason=data.get("end_reason", ""),
            transcript=tuple(parse_transcript(data.get("transcript"))),
            summary=data.get("summary", ""),
            bot_pid=int(data["bot_pid"]) if data.get("bot_pid") else None,
            metrics=json.loads(data["metrics"]) if data.get("metrics") else {},
            logs=tuple(json.loads(data["logs"])) if data.get("logs") else (),
            owner=data.get("owner") or None,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as JSON, for the HTTP API, the webhook and the spool."""
        return {
            "session_id": self.session_id,
            "status": self.status.value,
            "end_reason": self.end_reason,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "transcript": [line.to_json() for line in self.transcript],
            "summary": self.summary,
            "bot_pid": self.bot_pid,
            "metrics": self.metrics,
            "logs": list(self.logs),
            "owner": self.owner,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CallRecord:
        """The inverse of :meth:`to_json`."""
        transcript = data.get("transcript") or []
        if not isinstance(transcript, list):
            raise ValueError("transcript must be a list")
        ended, pid = data.get("ended_at"), data.get("bot_pid")
        return cls(
            session_id=str(data["session_id"]),
            status=CallStatus(str(data["status"])),
            started_at=float(data["started_at"]),
            ended_at=float(ended) if ended is not None else None,
            end_reason=str(data.get("end_reason", "")),
            transcript=tuple(TranscriptLine.from_json(item) for item in transcript),
            summary=str(data.get("summary", "")),
            bot_pid=int(pid) if pid is not None else None,
            metrics=dict(data.get("metrics") or {}),
            logs=tuple(data.get("logs") or ()),
            owner=str(data["owner"]) if data.get("owner") else None,
        )
