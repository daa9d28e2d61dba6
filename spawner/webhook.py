"""Signed delivery of the post-call webhook, and the check a receiver runs on it.

Each delivery is ``POST <VOICEBOTS_WEBHOOK_URL>`` with the call record as a JSON body and:

- ``X-Voicebots-Timestamp``: unix time in whole seconds when this attempt was signed;
- ``X-Voicebots-Signature``: ``sha256=`` + the hex HMAC-SHA256, keyed with
  ``VOICEBOTS_WEBHOOK_SECRET``, of the bytes ``f"{timestamp}.".encode() + body``.

A receiver recomputes the HMAC over the *raw* body it read (before any JSON parsing) with
:func:`verify_signature`, and should reject old timestamps (``max_age``) to stop replays.
Every attempt is signed afresh, so a retried delivery carries a current timestamp. With no
secret configured the signature header is left out.

Connection errors, timeouts, 5xx and 429 are retried with exponential backoff; any other
non-2xx status is final, since sending the same body again will not change the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from loguru import logger

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryResult",
    "WebhookDeliveryError",
    "deliver_webhook",
    "redact_url",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Voicebots-Signature"
TIMESTAMP_HEADER = "X-Voicebots-Timestamp"
#: A receiver's Retry-After is honoured up to this many seconds.
MAX_RETRY_AFTER = 60.0
USER_AGENT = "voicebots-webhook/1"


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Voicebots-Signature`` value for ``body`` sent at ``timestamp``."""
    message = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    header: str,
    *,
    max_age: float | None = None,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is the signature of ``body`` at ``timestamp`` under ``secret``.

    ``body`` must be the raw request body (a ``str`` is taken as its UTF-8 encoding). With
    ``max_age`` (seconds; 300 is a sensible choice) a timestamp further than that from ``now``
    (default: the current time) fails too. The comparison is constant-time.
    """
    if not secret:
        return False
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    if max_age is not None:
        current = time.time() if now is None else now
        if abs(current - sent_at) > max_age:
            return False
    raw = body.encode() if isinstance(body, str) else body
    return hmac.compare_digest(sign(secret, sent_at, raw).encode(), header.strip().encode())


@dataclass(frozen=True)
class DeliveryResult:
    attempts: int
    http_status: int


class WebhookDeliveryError(Exception):
    """The webhook was not accepted; raised after the last attempt (or a final 4xx)."""

    def __init__(self, message: str, *, attempts: int, http_status: int | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        #: The last HTTP status received, ``None`` if the last attempt got no response.
        self.http_status = http_status


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: webhook URLs often carry tokens in the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "0")), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        # An HTTP-date Retry-After is rare from webhook receivers; the backoff covers it.
        return 0.0


def deliver_webhook(
    url: str,
    body: bytes,
    *,
    secret: str,
    attempts: int,
    backoff: float,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """POST ``body`` to ``url`` until a 2xx answer, at most ``attempts`` times.

    Waits ``backoff``, ``2 * backoff``, ``4 * backoff``… between attempts (longer if a 429
    says ``Retry-After``). Raises :class:`WebhookDeliveryError` when it gives up.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    where = redact_url(url)
    if not secret:
        logger.warning(f"webhook to {where} is unsigned: VOICEBOTS_WEBHOOK_SECRET is empty")
    last_status: int | None = None
    with httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT}) as client:
        for attempt in range(1, attempts + 1):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
            if secret:
                headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
            delay = backoff * 2 ** (attempt - 1)
            try:
                response = client.post(url, content=body, headers=headers)
            except httpx.TransportError as error:
                last_status = None
                problem = f"{type(error).__name__}: {error}"
            else:
                last_status = response.status_code
                if response.is_success:
                    logger.info(f"webhook to {where} delivered (HTTP {last_status}, try {attempt})")
                    return DeliveryResult(attempts=attempt, http_status=last_status)
                problem = f"HTTP {last_status}"
                if last_status != 429 and last_status < 500:
                    raise WebhookDeliveryError(
                        f"webhook to {where} rejected: {problem}",
                        attempts=attempt,
                        http_status=last_status,
                    )
                delay = max(delay, _retry_after(response))
            if attempt == attempts:
                break
            logger.warning(
                f"webhook to {where} failed ({problem}), try {attempt}/{attempts}; "
                f"retrying in {delay:.2f}s"
            )
            sleep(delay)
    raise WebhookDeliveryError(
        f"webhook to {where} failed after {attempts} tries: {problem}",
        attempts=attempts,
        http_status=last_status,
    )
