"""Interface addresses read ahead of the offer: ICE gathering binds where the last read said."""

from __future__ import annotations

import asyncio

import aioice
import pytest

from media import interfaces


async def _gathered_hosts() -> set[str]:
    connection = aioice.Connection(ice_controlling=False)
    try:
        await connection.gather_candidates()
        return {c.host for c in connection.local_candidates if c.type == "host"}
    finally:
        await connection.close()


def test_gathering_binds_on_the_addresses_read_last(monkeypatch: pytest.MonkeyPatch) -> None:
    host_addresses = ["127.0.0.2"]
    reads: list[tuple[bool, bool]] = []

    def read(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        reads.append((use_ipv4, use_ipv6))
        return list(host_addresses)

    monkeypatch.setattr(interfaces, "_read", read)
    interfaces.read_ahead()
    try:
        assert reads == [(True, True)]
        assert asyncio.run(_gathered_hosts()) == {"127.0.0.2"}
        host_addresses[:] = ["127.0.0.3"]  # the host's interfaces change
        assert asyncio.run(_gathered_hosts()) == {"127.0.0.2"}, "read again at gathering"
        assert reads == [(True, True)]
        assert interfaces.refresh() is True  # as each heartbeat does; they changed
        assert asyncio.run(_gathered_hosts()) == {"127.0.0.3"}
        assert interfaces.refresh() is False
    finally:
        interfaces.stop_reading_ahead()
    assert asyncio.run(_gathered_hosts()) != {"127.0.0.3"}, "aioice reads the host's own again"
