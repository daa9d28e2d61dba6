"""Every reach voicebots makes into aiortc's and aioice's internals, and the probe of them.

voicebots uses aiortc and aioice through their public API, except where that API has no way
to do what a voice server needs. Each such reach is a function here, whose docstring says
what it does, what upstream lacks, and the upstream issue where there is one. Nothing else in
voicebots touches a private attribute of either library or replaces a name in one of their
modules.

The releases these reaches were tested with are :data:`AIORTC` and :data:`AIOICE`, the same
ranges pyproject.toml pins. :func:`probe` checks, where a server starts (the spawner, before
its zygote forks any bot, and ``voicebots up``), that the installed releases are those and
that every internal reached is still where it was; an upgrade that moves one then stops the
server with a message naming it, instead of failing calls at random later. Each check takes
the class or module it inspects, so a test can point it at a stand-in.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

import aioice
import aioice.candidate
import aioice.ice
import aioice.turn
import aiortc.rtcdtlstransport
import aiortc.rtcicetransport
from aioice import Candidate
from aiortc import RTCRtpReceiver
from packaging.requirements import Requirement

from common.code_names import names_used

__all__ = [
    "AIOICE",
    "AIORTC",
    "add_host_protocols",
    "check_dtls_dispatch",
    "check_ice_connection",
    "check_ice_gatherer",
    "check_ice_helpers",
    "check_receiver",
    "check_release",
    "on_rtp_packet",
    "open_host_protocol",
    "probe",
    "receiver_jitter_buffer",
    "server_reflexive_candidate",
    "set_ice_connection",
    "set_receiver_jitter_buffer",
]

#: The aiortc releases voicebots is tested with (pinned in pyproject.toml).
AIORTC = "aiortc>=1.16,<1.17"
#: The aioice releases voicebots is tested with (pinned in pyproject.toml).
AIOICE = "aioice>=0.13,<0.14"

#: aiortc's receiver keeps its jitter buffer and packet handler under these names.
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_HANDLE_RTP = "_handle_rtp_packet"


# -- ICE: host candidates in a port range, on one address, advertising a public one ---------


def set_ice_connection(factory: Callable[..., aioice.Connection] | None) -> None:
    """Make aiortc build every ICE connection of this process with ``factory`` (``None``:
    aioice's own ``Connection`` again).

    aiortc's ``RTCIceGatherer`` creates its ``aioice.Connection`` itself, looking the name
    ``Connection`` up in ``aiortc.rtcicetransport`` each time, and takes no factory: replacing
    that name is the only way to give it a connection whose host candidates bind in a UDP
    port range, on one address, and advertise a public IP (aiortc/aiortc#487).
    """
    module: Any = aiortc.rtcicetransport
    module.Connection = aioice.Connection if factory is None else factory


def add_host_protocols(connection: aioice.Connection, protocols: list[Any]) -> None:
    """Register host sockets bound outside aioice as ``connection``'s own: remote candidates
    are paired with them, checks go out through them, and ``close()`` closes them.

    aioice binds each host socket on a port the kernel picks (``local_addr=(address, 0)``)
    and has no setting for a port range or a bind address (aiortc/aioice#47; aiortc/aioice#112
    proposes one); the sockets a connection uses are its private ``_protocols`` list.
    """
    connection._protocols += protocols


async def open_host_protocol(
    connection: aioice.Connection, sock: socket.socket, component: int, advertised: str
) -> Any:
    """aioice's STUN protocol for ``connection`` on the bound UDP ``sock`` (closed if this
    fails), with the receive buffer aioice gives its own host sockets, whose host candidate
    (its ``local_candidate``) announces ``advertised`` instead of the address bound.

    ``StunProtocol``, ``UDP_SOCKET_BUFFER_SIZE`` and the candidate helpers are module-level
    names of ``aioice.ice``, ``aioice.turn`` and ``aioice.candidate``, outside aioice's
    exported API (see :func:`add_host_protocols`). The candidate's foundation is computed
    from the base (bound) address, as RFC 8445 asks.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: aioice.ice.StunProtocol(connection), sock=sock
        )
    except BaseException:
        sock.close()
        raise
    bound, port = sock.getsockname()[:2]
    protocol.local_candidate = Candidate(
        foundation=aioice.candidate.candidate_foundation("host", "udp", bound),
        component=component,
        transport="udp",
        priority=aioice.candidate.candidate_priority(component, "host"),
        host=advertised,
        port=port,
        type="host",
    )
    return protocol


async def server_reflexive_candidate(protocol: Any, stun_server: tuple[str, int]) -> Candidate:
    """The server-reflexive candidate a STUN server reports for ``protocol``'s socket
    (aioice's own lookup, a module-level name of ``aioice.ice``, not exported)."""
    candidate, _protocol = await aioice.ice.server_reflexive_candidate(protocol, stun_server)
    return candidate


# -- Receivers: the audio jitter buffer, and the arrival of each RTP packet -----------------


def receiver_jitter_buffer(receiver: RTCRtpReceiver) -> Any:
    """The jitter buffer ``receiver`` feeds each RTP packet to; ``None`` if it has none."""
    return getattr(receiver, _JITTER_BUFFER, None)


def set_receiver_jitter_buffer(receiver: RTCRtpReceiver, buffer: Any) -> None:
    """Feed ``receiver``'s RTP packets to ``buffer`` (``add(packet)`` → ``(pli, frame)``).

    aiortc gives an audio receiver a fixed ``JitterBuffer(capacity=16, prefetch=4)``, built
    for video, in the name-mangled ``__jitter_buffer``, and has no setting for it
    (aiortc/aiortc#543: audio latency grows after a loss). pipecat replaces the same attribute
    for its video receivers.
    """
    setattr(receiver, _JITTER_BUFFER, buffer)


RtpCallback = Callable[[Any, int], Awaitable[None]]


def on_rtp_packet(receiver: RTCRtpReceiver, callback: RtpCallback) -> None:
    """Await ``callback(packet, arrival_time_ms)`` as each RTP packet reaches ``receiver``,
    before the receiver handles it (the bench's caller times replies by packet arrival).

    aiortc has no event for inbound RTP. Its DTLS transport hands each packet to the
    receiver's private ``_handle_rtp_packet``, looked up on the instance each time, so an
    instance attribute wrapping it sees every packet.
    """
    original = getattr(receiver, _HANDLE_RTP)

    async def arrived(packet: Any, arrival_time_ms: int) -> None:
        await callback(packet, arrival_time_ms)
        await original(packet, arrival_time_ms=arrival_time_ms)

    setattr(receiver, _HANDLE_RTP, arrived)


# -- The probe ------------------------------------------------------------------------------


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _moved(spec: str, what: str) -> RuntimeError:
    name = Requirement(spec).name
    return RuntimeError(
        f"{name} {_installed(name)} moved {what}; voicebots supports {spec} "
        "(media/aiortc_adapter.py reaches it)"
    )


def check_release(spec: str, installed: str | None = None) -> None:
    """Raise ``RuntimeError`` unless the installed (or the ``installed``) release of the
    library ``spec`` names is one it allows."""
    requirement = Requirement(spec)
    installed = installed or _installed(requirement.name)
    if installed is None:
        raise RuntimeError(f"{requirement.name} is not installed: pip install '{spec}'")
    if not requirement.specifier.contains(installed, prereleases=True):
        raise RuntimeError(
            f"voicebots supports {spec}, but {requirement.name} {installed} is installed: "
            f"pip install '{spec}'"
        )


def check_receiver(receiver_class: type) -> None:
    """``receiver_class`` (aiortc's ``RTCRtpReceiver``) keeps its jitter buffer where
    :func:`set_receiver_jitter_buffer` puts it, and feeds packets to it from
    ``_handle_rtp_packet``, which :func:`on_rtp_packet` wraps."""
    name = receiver_class.__name__
    handler = getattr(receiver_class, _HANDLE_RTP, None)
    if handler is None or not inspect.iscoroutinefunction(handler):
        raise _moved(AIORTC, f"{name}.{_HANDLE_RTP}")
    if "arrival_time_ms" not in inspect.signature(handler).parameters:
        raise _moved(AIORTC, f"{name}.{_HANDLE_RTP}'s arrival_time_ms")
    built = names_used(getattr(receiver_class, "__init__", None))
    if _JITTER_BUFFER not in built & names_used(handler):
        raise _moved(AIORTC, f"{name}.__jitter_buffer")


def check_dtls_dispatch(dtls_transport_class: type) -> None:
    """aiortc's DTLS transport hands RTP to ``receiver._handle_rtp_packet``."""
    dispatch = getattr(dtls_transport_class, "_handle_rtp_data", None)
    if _HANDLE_RTP not in names_used(dispatch):
        raise _moved(AIORTC, f"{dtls_transport_class.__name__}'s RTP hand-over to receivers")


def check_ice_gatherer(module: ModuleType) -> None:
    """``module`` (``aiortc.rtcicetransport``) builds its gatherer's ICE connection from its
    module-level name ``Connection``, which :func:`set_ice_connection` replaces."""
    gatherer = getattr(module, "RTCIceGatherer", None)
    if not hasattr(module, "Connection") or "Connection" not in names_used(
        getattr(gatherer, "__init__", None)
    ):
        raise _moved(AIORTC, f"{module.__name__}.Connection (RTCIceGatherer's ICE connection)")


def check_ice_connection(connection_class: type) -> None:
    """``connection_class`` (``aioice.Connection``) keeps its sockets in a ``_protocols``
    list and gathers each component's candidates in ``get_component_candidates``."""
    name = connection_class.__name__
    gather = getattr(connection_class, "get_component_candidates", None)
    if gather is None or not {"component", "addresses", "timeout"} <= set(
        inspect.signature(gather).parameters
    ):
        raise _moved(AIOICE, f"{name}.get_component_candidates")
    if "get_component_candidates" not in names_used(
        getattr(connection_class, "gather_candidates", None)
    ):
        raise _moved(AIOICE, f"{name}.gather_candidates (to get_component_candidates)")
    connection = connection_class(ice_controlling=False)
    if not isinstance(getattr(connection, "_protocols", None), list):
        raise _moved(AIOICE, f"{name}._protocols")


def check_ice_helpers(ice: ModuleType, candidate: ModuleType, turn: ModuleType) -> None:
    """The module-level helpers of aioice that the host candidates are made with."""
    for module, names in (
        (ice, ("StunProtocol", "server_reflexive_candidate")),
        (candidate, ("candidate_foundation", "candidate_priority")),
        (turn, ("UDP_SOCKET_BUFFER_SIZE",)),
    ):
        for attribute in names:
            if not hasattr(module, attribute):
                raise _moved(AIOICE, f"{module.__name__}.{attribute}")


def probe() -> None:
    """Raise ``RuntimeError``, saying what moved and which releases voicebots supports,
    unless the installed aiortc and aioice are tested releases with every internal reached
    here where it was."""
    check_release(AIORTC)
    check_release(AIOICE)
    check_receiver(RTCRtpReceiver)
    check_dtls_dispatch(aiortc.rtcdtlstransport.RTCDtlsTransport)
    check_ice_gatherer(aiortc.rtcicetransport)
    check_ice_connection(aioice.Connection)
    check_ice_helpers(aioice.ice, aioice.candidate, aioice.turn)
