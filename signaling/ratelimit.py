"""Per-client rate limiting of the requests that cost the server something: a token bucket
per client address.

Each client address has a bucket of ``burst`` tokens that refills at ``per_minute / 60``
tokens a second; a request takes one, and a request finding the bucket empty is refused
with the time until a token is back. Buckets live in memory, least recently used first; a
bucket that has had time to refill completely is the same as no bucket and is dropped, so
memory follows the number of clients seen in the last ``burst / rate`` seconds (and never
exceeds ``max_clients``).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request

__all__ = ["RateLimiter", "client_address"]


class RateLimiter:
    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("a rate limiter needs a positive rate and a burst of at least 1")
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._max_clients = max_clients
        #: client → (tokens, when they were counted); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float | None:
        """Spend one token of ``client``'s bucket: ``None`` if there was one, else the seconds
        until there is."""
        now = self._clock()
        self._forget_full(now)
        tokens, then = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = None
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return wait

    def _forget_full(self, now: float) -> None:
        refill = self._burst / self._rate
        while self._buckets:
            _client, (_tokens, then) = next(iter(self._buckets.items()))
            if now - then < refill:
                break  # the rest were used more recently still
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


def client_address(request: Request, trust_proxy: bool) -> str:
    """The address a client's requests are counted under.

    ``X-Forwarded-For`` is set by whoever sent the request, so it is read only behind a proxy
    (``trust_proxy``), and only its last entry: the one that proxy appended. IPv6 clients are
    counted by /64, the block one host usually holds.
    """
    address = request.client.host if request.client is not None else ""
    if trust_proxy:
        forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            address = last
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)
