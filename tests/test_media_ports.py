"""The UDP port range ICE binds in, with real sockets on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from media.ports import NoFreePort, PortRange, bind_udp

HOST = "127.0.0.1"


@contextmanager
def free_range(size: int) -> Iterator[tuple[PortRange, dict[int, socket.socket]]]:
    """A range of ``size`` consecutive free UDP ports on loopback, each held by a socket (so
    no other process takes it meanwhile) until the test closes it or the block ends."""
    for base in range(42000, 60000, size):
        held: dict[int, socket.socket] = {}
        try:
            for port in range(base, base + size):
                held[port] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held[port].bind((HOST, port))
        except OSError:
            for sock in held.values():
                sock.close()
            continue
        try:
            yield PortRange(base, base + size - 1), held
        finally:
            for sock in held.values():
                sock.close()
        return
    raise RuntimeError(f"no {size} consecutive free UDP ports on {HOST}")


def test_parse_and_describe() -> None:
    ports = PortRange.parse("40000-40031")
    assert (ports.first, ports.last, len(ports), str(ports)) == (40000, 40031, 32, "40000-40031")
    assert 40000 in ports and 40031 in ports and 40032 not in ports
    assert list(PortRange(40000, 40003).ports_from(40002)) == [40002, 40003, 40000, 40001]
    assert PortRange.parse(" 5000 - 5000 ") == PortRange(5000, 5000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("40000", "VOICEBOTS_UDP_PORTS must look like 40000-40031 (first-last), got '40000'"),
        ("40000:40031", "VOICEBOTS_UDP_PORTS must look like 40000-40031"),
        ("a-b", "VOICEBOTS_UDP_PORTS must look like 40000-40031"),
        ("40031-40000", "VOICEBOTS_UDP_PORTS must be a range within 1024-65535 with first"),
        ("80-90", "VOICEBOTS_UDP_PORTS must be a range within 1024-65535"),
        ("60000-70000", "VOICEBOTS_UDP_PORTS must be a range within 1024-65535"),
    ],
)
def test_parse_errors_name_the_variable(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        PortRange.parse(text)


def test_binds_the_start_port_when_free() -> None:
    with free_range(4) as (ports, held):
        held.pop(ports.first + 2).close()
        with bind_udp(HOST, ports, start=ports.first + 2) as sock:
            assert sock.getsockname() == (HOST, ports.first + 2)
            assert not sock.getblocking()


def test_collision_moves_to_the_next_free_port() -> None:
    with free_range(4) as (ports, held):
        # The start port and the next one are taken (by "other bots"); the one after is free.
        held.pop(ports.first + 3).close()
        with bind_udp(HOST, ports, start=ports.first + 1) as sock:
            assert sock.getsockname()[1] == ports.first + 3


def test_search_wraps_around_the_range() -> None:
    with free_range(4) as (ports, held):
        held.pop(ports.first).close()
        with bind_udp(HOST, ports, start=ports.last) as sock:
            assert sock.getsockname()[1] == ports.first


def test_many_sockets_share_a_range_without_collisions() -> None:
    with free_range(8) as (ports, held):
        for sock in held.values():
            sock.close()  # release every port
        with ExitStack() as mine:
            bound = [mine.enter_context(bind_udp(HOST, ports)) for _ in range(8)]
            assert sorted(s.getsockname()[1] for s in bound) == list(ports)
            with pytest.raises(NoFreePort):
                bind_udp(HOST, ports)


def test_exhausted_range_fails_clearly() -> None:
    with free_range(3) as (ports, _held):
        with pytest.raises(NoFreePort) as caught:
            bind_udp(HOST, ports)
    assert str(caught.value) == (
        f"no free UDP port in VOICEBOTS_UDP_PORTS={ports} on {HOST}: all 3 are in use; "
        "widen the range or lower VOICEBOTS_MAX_BOTS"
    )
    assert caught.value.ports == ports and caught.value.host == HOST


def test_other_bind_errors_are_not_taken_for_collisions() -> None:
    # 203.0.113.77 (TEST-NET-3) is no address of this machine: retrying other ports is pointless.
    with pytest.raises(OSError) as caught:
        bind_udp("203.0.113.77", PortRange(42000, 42003))
    assert not isinstance(caught.value, NoFreePort)


def test_without_a_range_the_kernel_picks() -> None:
    with bind_udp(HOST, None) as sock:
        assert sock.getsockname()[1] > 0


def test_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"::1 cannot be bound here: {exc}")
    with bind_udp("::1", PortRange(42100, 42131)) as sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockname()[1] in PortRange(42100, 42131)
