"""This host's interface addresses, read ahead of the offer.

aioice lists the host's interfaces each time a peer connection gathers its candidates: ifaddr
walks every adapter and address, ~0.5 ms of CPU on the answer's critical path (~10 % of a
bot's answer). A bot reads them while it waits instead: :func:`read_ahead` makes this process's
gathering use the list read last, and the bot's heartbeat calls :func:`refresh`, so an answer
uses addresses at most one heartbeat old. A bot that gathered its candidates ahead of the offer
exits when :func:`refresh` finds them changed, and the pool starts a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable

import aioice.ice

__all__ = ["read_ahead", "refresh", "stop_reading_ahead"]

#: aioice's own reader: (use_ipv4, use_ipv6) → addresses.
AIOICE_READ: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
#: What :func:`refresh` reads with.
_read = AIOICE_READ
#: The addresses read last, by the families asked for.
_latest: dict[tuple[bool, bool], list[str]] = {}


def refresh() -> bool:
    """Read the addresses now, for both families and for any other choice asked for before;
    returns whether any of them changed since they were last read."""
    changed = False
    for key in {(True, True), *_latest}:
        addresses = _read(*key)
        changed |= key in _latest and _latest[key] != addresses
        _latest[key] = addresses
    return changed


def _latest_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    key = (use_ipv4, use_ipv6)
    if key not in _latest:
        _latest[key] = _read(use_ipv4, use_ipv6)
    return list(_latest[key])


def read_ahead() -> None:
    """Read the addresses now; from then on, ICE gathering in this process uses the latest."""
    refresh()
    # aioice's gather_candidates looks this name up in its module at each gathering.
    setattr(aioice.ice, "get_host_addresses", _latest_addresses)  # noqa: B010


def stop_reading_ahead() -> None:
    """Back to aioice's own reading at each gathering."""
    setattr(aioice.ice, "get_host_addresses", AIOICE_READ)  # noqa: B010
    _latest.clear()
