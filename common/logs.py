"""Structured logs: one JSON object per line, carrying the ``session_id`` of the call.

Every process logs through loguru, at ``VOICEBOTS_LOG_LEVEL`` and above. Each line is
``{"ts", "level", "process", "pid", "message", "session_id"?, ...extra}``, unless stderr is a
terminal: a person is watching, and reads the human-readable form. Code binds the session with
``logger.bind(session_id=...)`` or ``logger.contextualize(session_id=...)``.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from loguru import logger

from common.env import Environ
from common.settings import LOG_LEVEL

__all__ = ["configure_logging", "log_record"]

#: The parts of a log line that are kept when it travels (to the spawner, into a record).
LogRecord = dict[str, Any]


def log_record(message: Any, process: str) -> LogRecord:
    """A loguru message as a flat JSON-ready dict."""
    record = message.record
    line: LogRecord = {
        "ts": round(record["time"].timestamp(), 3),
        "level": record["level"].name,
        "process": process,
        "pid": record["process"].id,
        "message": record["message"],
    }
    for key, value in record["extra"].items():
        line[key] = value if isinstance(value, str | int | float | bool) else str(value)
    if record["exception"] is not None:
        line["exception"] = "".join(traceback.format_exception(*record["exception"]))[-4000:]
    return line


def configure_logging(
    process: str,
    environ: Environ,
    *,
    also: Callable[[LogRecord], None] | None = None,
) -> None:
    """Replace loguru's sinks: stderr (JSON, or text on a terminal), plus ``also`` if given."""
    level = LOG_LEVEL.read(environ)
    fmt = "text" if sys.stderr.isatty() else "json"
    logger.remove()

    def sink(message: Any) -> None:
        line = log_record(message, process)
        if fmt == "json":
            sys.stderr.write(json.dumps(line) + "\n")
        else:
            session = f" [{line['session_id']}]" if "session_id" in line else ""
            sys.stderr.write(
                f"{message.record['time']:%H:%M:%S.%f}"[:-3]
                + f" {line['level']:<7} {process}[{line['pid']}]{session} {line['message']}\n"
            )
        if also is not None:
            also(line)

    logger.add(sink, level=level, enqueue=False, backtrace=False, diagnose=False)
