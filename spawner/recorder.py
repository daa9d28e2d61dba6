"""Delivers call records to Redis and enqueues their post-call job — or spools them.

A record that cannot be written (Redis down, timeouts) goes to the local :class:`Spool` and is
retried until Redis takes it, also after a restart. Live calls are journaled line by line, so
even a spawner killed mid-call leaves a record behind for the next one to deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis
import redis.asyncio as aioredis
from loguru import logger

from common.record import CallRecord, CallStatus, TranscriptLine, call_key
from spawner.postcall import enqueue_postcall
from spawner.spool import Spool

__all__ = ["Recorder"]

_DELIVERY_ERRORS = (redis.RedisError, OSError)


class Recorder:
    def __init__(self, redis_url: str, spool: Spool, retry_interval: float = 2.0) -> None:
        self._redis = aioredis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )
        # rq speaks a blocking client; its calls run in a worker thread.
        self._sync = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._spool = spool
        self._retry_interval = retry_interval
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.delivered = 0
        self.spooled = 0

    def start(self) -> None:
        for record in self._spool.orphans():
            logger.warning(
                f"session {record.session_id}: left unfinished by a previous spawner; "
                f"recording it with {len(record.transcript)} lines"
            )
            self._spool.put(record)
            self._spool.forget_orphan(record.session_id)
        self._flusher = asyncio.create_task(self._flush_forever(), name="spool-flusher")

    @property
    def backlog(self) -> int:
        return self._spool.count()

    async def open_call(self, session_id: str, started_at: float, owner: str | None) -> None:
        try:
            self._spool.open_journal(session_id, started_at, owner)
        except OSError as exc:
            # The call goes on; only a spawner crash during it could now lose its lines.
            logger.bind(session_id=session_id).error(f"could not open the call's journal: {exc}")
        fields: dict[Any, Any] = {
            "status": CallStatus.ACTIVE.value,
            "started_at": repr(started_at),
        }
        if owner is not None:
            fields["owner"] = owner
        try:
            await self._redis.hset(call_key(session_id), mapping=fields)
        except _DELIVERY_ERRORS as exc:
            # Not fatal: the final record is what matters, and it is spooled if need be.
            logger.bind(session_id=session_id).warning(f"could not mark active: {exc}")

    def line(self, session_id: str, line: TranscriptLine) -> None:
        self._spool.journal(session_id, line)

    async def finish(self, record: CallRecord) -> bool:
        """Store the final record and enqueue its job; spool it if Redis is unreachable.

        Returns whether it reached Redis now.
        """
        try:
            await self._deliver(record)
            delivered = True
        except _DELIVERY_ERRORS as exc:
            self._spool.put(record)
            self.spooled += 1
            logger.bind(session_id=record.session_id).warning(f"Redis unreachable ({exc}); spooled")
            delivered = False
        self._spool.close_journal(record.session_id)
        return delivered

    async def _deliver(self, record: CallRecord) -> None:
        fields: dict[Any, Any] = record.to_hash()
        await self._redis.hset(call_key(record.session_id), mapping=fields)
        await asyncio.to_thread(enqueue_postcall, self._sync, record.session_id)
        self.delivered += 1

    async def flush(self) -> int:
        """Deliver spooled records; stops at the first failure. Returns how many went."""
        sent = 0
        for path, record in self._spool.pending():
            try:
                await self._deliver(record)
            except _DELIVERY_ERRORS:
                break
            self._spool.remove(path)
            sent += 1
            logger.bind(session_id=record.session_id).info("spooled record delivered")
        return sent

    async def _flush_forever(self) -> None:
        while True:
            await self.flush()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._retry_interval)
            self._wake.clear()

    async def close(self) -> None:
        """Stop retrying (the spool keeps what is left) and close connections."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush()
        self._spool.close()
        await self._redis.aclose()
        self._sync.close()
