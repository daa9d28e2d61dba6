"""A fixed range of UDP ports for ICE host candidates, shared by every bot on a machine.

Firewalls, ``docker run -p`` and Fly.io's UDP services must know in advance which ports media
arrives on, so bots bind their ICE sockets inside ``VOICEBOTS_UDP_PORTS`` instead of letting
the kernel pick an ephemeral port. Many bot processes share one range and none knows which
ports the others hold. The kernel arbitrates: a bind either takes a port or fails with
``EADDRINUSE``, atomically, so a bot that collides simply tries the next port. Each search
starts at a random port so that bots starting together spread over the range instead of all
probing it from its first port.
"""

from __future__ import annotations

import errno
import random
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["NoFreePort", "PortRange", "bind_udp"]

_RANGE = re.compile(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*")
#: Below this, binding needs privileges and collides with well-known services.
MIN_PORT = 1024


@dataclass(frozen=True)
class PortRange:
    """Ports ``first`` to ``last``, both included."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not MIN_PORT <= self.first <= self.last <= 65535:
            raise ValueError(
                f"a port range must satisfy {MIN_PORT} <= first <= last <= 65535, "
                f"got {self.first}-{self.last}"
            )

    @classmethod
    def parse(cls, text: str, name: str = "VOICEBOTS_UDP_PORTS") -> PortRange:
        """``"40000-40031"`` → ``PortRange(40000, 40031)``; ``name`` is the setting's name."""
        match = _RANGE.fullmatch(text)
        if match is None:
            raise ValueError(f"{name} must look like 40000-40031 (first-last), got {text!r}")
        first, last = int(match[1]), int(match[2])
        if not MIN_PORT <= first <= last <= 65535:
            raise ValueError(
                f"{name} must be a range within {MIN_PORT}-65535 with first <= last, got {text!r}"
            )
        return cls(first, last)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.first, self.last + 1))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def ports_from(self, start: int) -> Iterator[int]:
        """Every port of the range once, beginning at ``start`` and wrapping around."""
        if start not in self:
            raise ValueError(f"port {start} is not in {self}")
        yield from range(start, self.last + 1)
        yield from range(self.first, start)


class NoFreePort(RuntimeError):
    """Every port of the range is already bound on that address."""

    def __init__(self, ports: PortRange, host: str) -> None:
        super().__init__(
            f"no free UDP port in VOICEBOTS_UDP_PORTS={ports} on {host}: all {len(ports)} are "
            "in use; widen the range or lower VOICEBOTS_MAX_BOTS"
        )
        self.ports = ports
        self.host = host


def bind_udp(host: str, ports: PortRange | None, *, start: int | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` on a free port of ``ports``.

    With ``ports=None`` the kernel picks any free port. ``start`` is the first port tried
    (random by default). A port taken by another socket is skipped; any other bind error is
    raised as it is, since it would fail the same on every port. Raises :class:`NoFreePort`
    when the whole range is taken.
    """
    # A numeric host only: names are resolved once, at start-up, not per socket.
    family, _, _, _, address = socket.getaddrinfo(
        host, None, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
    )[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if ports is None:
            sock.bind((address[0], 0, *address[2:]))
            sock.setblocking(False)
            return sock
        first = random.randint(ports.first, ports.last) if start is None else start
        for port in ports.ports_from(first):
            try:
                # A failed bind leaves the socket unbound, so the same socket tries again.
                sock.bind((address[0], port, *address[2:]))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            sock.setblocking(False)
            return sock
    except BaseException:
        sock.close()
        raise
    sock.close()
    raise NoFreePort(ports, host)
