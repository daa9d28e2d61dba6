"""The post-call rq job: summarize an ended call, store the summary, deliver the webhook.

The bot (or the spawner, if the bot died) calls :func:`enqueue_postcall` once the call's hash
``voicebots:call:{session_id}`` is final; an rq worker on queue ``voicebots`` runs
:func:`process_call`::

    rq worker --url "$REDIS_URL" voicebots

The job is safe to run again (an rq retry, ``rq requeue``): a stored ``summary`` is kept, and a
webhook already recorded as delivered is not sent again. Besides ``summary`` it writes these
fields to the call hash:

- ``summary_source``: ``openai``, ``offline``, or ``offline-fallback`` (the LLM failed);
- ``webhook_status``: ``delivered`` or ``failed`` (absent without ``VOICEBOTS_WEBHOOK_URL``);
- ``webhook_attempts``: POSTs made by the last run; ``webhook_error``: why the last one failed.

A failed webhook raises :class:`~spawner.webhook.WebhookDeliveryError`, so rq marks the job failed
and keeps it in the failed registry for inspection or requeueing. See :mod:`spawner.webhook` for
the signature scheme; receivers check it with :func:`verify_signature`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from typing import Any

import openai
import redis
from loguru import logger
from rq import Queue, Worker
from rq.exceptions import DuplicateJobError

from bots.config import PostCallConfig
from common.record import QUEUE_NAME, CallRecord, call_key
from spawner.summary import extractive_summary, llm_summary
from spawner.webhook import WebhookDeliveryError, deliver_webhook, verify_signature

__all__ = [
    "FAILURE_TTL",
    "JOB_TIMEOUT",
    "RESULT_TTL",
    "PostCallWorker",
    "enqueue_postcall",
    "postcall_job_id",
    "process_call",
    "run_postcall",
    "verify_signature",
]

#: Seconds a job may run: an LLM call with retries plus every webhook attempt and backoff.
JOB_TIMEOUT = 600
#: Seconds rq keeps a finished job (and so refuses to enqueue the same call again).
RESULT_TTL = 24 * 3600
#: Seconds rq keeps a failed job in its failed registry.
FAILURE_TTL = 7 * 24 * 3600

#: How often the worker's command listener wakes (seconds); see PostCallWorker.
COMMAND_POLL = 1.0


class PostCallWorker(Worker):
    """rq's worker, whose command listener (stop a job, shut down) polls every second.

    rq's listener waits up to 60 s for a message; when the worker exits it unsubscribes and
    then waits for that thread, which can start a new 60 s wait first: a burst worker whose
    jobs took a second sometimes took a minute more to exit, and so did a drain.
    """

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=COMMAND_POLL, daemon=True
        )


_JOB_ID_SAFE = re.compile(r"[A-Za-z0-9_-]{1,100}")


def postcall_job_id(session_id: str) -> str:
    """The rq job id of a call's post-call job; the same session always maps to the same id."""
    # rq ids allow only letters, digits, "_" and "-"; other session ids are hashed.
    if _JOB_ID_SAFE.fullmatch(session_id):
        return f"postcall-{session_id}"
    return "postcall-" + hashlib.sha256(session_id.encode()).hexdigest()[:40]


def enqueue_postcall(
    redis_sync_client: redis.Redis, session_id: str, *, job_timeout: int = JOB_TIMEOUT
) -> bool:
    """Enqueue :func:`process_call` for ``session_id`` on the ``voicebots`` queue.

    Returns ``False`` when the call already has a job (queued, running, finished within
    ``RESULT_TTL`` or failed within ``FAILURE_TTL``); rq checks and enqueues atomically, so
    concurrent callers cannot both succeed. ``redis_sync_client`` must not use
    ``decode_responses`` (rq stores binary data).
    """
    queue = Queue(QUEUE_NAME, connection=redis_sync_client)
    try:
        queue.enqueue(
            process_call,
            session_id,
            job_id=postcall_job_id(session_id),
            unique=True,
            job_timeout=job_timeout,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            description=f"post-call {session_id}",
        )
    except DuplicateJobError:
        logger.info(f"post-call job for {session_id} already exists; not enqueued again")
        return False
    return True


def process_call(session_id: str) -> dict[str, Any]:
    """The rq job (an entry point): read the configuration, then :func:`run_postcall`."""
    config = PostCallConfig.from_env(os.environ)
    client = redis.Redis.from_url(config.redis_url)
    try:
        return run_postcall(config, client, session_id)
    finally:
        client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _summarize(config: PostCallConfig, record: CallRecord) -> tuple[str, str]:
    if config.providers.llm != "openai":
        return extractive_summary(record), "offline"
    try:
        return llm_summary(config.providers, record), "openai"
    except (openai.OpenAIError, ValueError) as error:
        # A summary from the transcript beats none: the webhook still goes out on time.
        logger.warning(f"LLM summary of {record.session_id} failed ({error!r}); using offline")
        return extractive_summary(record), "offline-fallback"


def run_postcall(
    config: PostCallConfig, redis_client: redis.Redis, session_id: str
) -> dict[str, Any]:
    """Summarize call ``session_id``, store the summary, and deliver the webhook if configured.

    Works with a ``redis_client`` with or without ``decode_responses``. Returns what it did
    (the rq job result); raises ``LookupError`` for an unknown call and
    :class:`~spawner.webhook.WebhookDeliveryError` when the webhook is not delivered.
    """
    key = call_key(session_id)
    data = {_text(k): _text(v) for k, v in redis_client.hgetall(key).items()}
    if not data:
        raise LookupError(f"no call record at {key}")
    record = CallRecord.from_hash(session_id, data)
    result: dict[str, Any] = {"session_id": session_id}

    if record.summary:
        result["summary_source"] = data.get("summary_source", "stored")
        logger.info(f"call {session_id} already summarized; keeping the stored summary")
    else:
        summary, source = _summarize(config, record)
        record = replace(record, summary=summary)
        redis_client.hset(key, mapping={"summary": summary, "summary_source": source})
        result["summary_source"] = source
        logger.info(f"call {session_id} summarized ({source}, {len(summary)} chars)")

    if not config.webhook_url:
        return result
    if data.get("webhook_status") == "delivered":
        result["webhook_status"] = "delivered"
        return result
    body = json.dumps(record.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
    try:
        delivery = deliver_webhook(
            config.webhook_url,
            body,
            secret=config.webhook_secret,
            attempts=config.webhook_attempts,
            backoff=config.webhook_backoff,
            timeout=config.webhook_timeout,
        )
    except WebhookDeliveryError as error:
        redis_client.hset(
            key,
            mapping={
                "webhook_status": "failed",
                "webhook_attempts": str(error.attempts),
                "webhook_error": str(error),
            },
        )
        raise
    redis_client.hset(
        key,
        mapping={
            "webhook_status": "delivered",
            "webhook_attempts": str(delivery.attempts),
            "webhook_error": "",
        },
    )
    result.update(webhook_status="delivered", webhook_attempts=delivery.attempts)
    return result
