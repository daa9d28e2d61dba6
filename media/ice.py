"""ICE the way a bot behind a firewall or a 1:1 NAT needs it.

aiortc gathers candidates through aioice, which binds one socket per interface address on a
port the kernel picks and advertises the address it bound. Neither library has a setting to
change that, so this module gives aioice's ``Connection`` a subclass whose host candidates
follow an :class:`IcePolicy` — bound inside ``VOICEBOTS_UDP_PORTS``, only on
``VOICEBOTS_BIND_HOST``'s address when it is set, and advertising ``VOICEBOTS_PUBLIC_IP``
instead of the private address — and :func:`install` makes aiortc build its ICE connections
from that subclass. STUN and TURN candidates, connectivity checks and consent stay aioice's.

Installation is per process, like logging configuration: a bot owns exactly one peer
connection, and :func:`bots.connection.prepare_connection` installs the bot's policy before creating
it. The advertised address is written into the candidate objects themselves, so the SDP
answer, its ``c=`` line and any later renegotiation carry it with no SDP rewriting, while the
socket stays bound to the private address the NAT forwards to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aioice
import aiortc.rtcicetransport
from aioice import turn
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, server_reflexive_candidate
from aiortc import RTCIceServer

from media.config import MediaConfig
from media.ports import NoFreePort, PortRange, bind_udp

__all__ = [
    "IcePolicy",
    "NoFreePort",
    "TimedTurnServer",
    "install",
    "installed",
    "peer_ice_servers",
    "uninstall",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IcePolicy:
    """Where host candidates bind and what they advertise. The default changes nothing."""

    #: Host candidates bind inside this range; ``None``: any port.
    ports: PortRange | None = None
    #: The only address bound (an address, not a name); ``""``: every interface address.
    bind_address: str = ""
    #: Advertised in place of each bound IPv4 address; ``""``: the bound address itself.
    public_ip: str = ""

    @classmethod
    def from_config(cls, media: MediaConfig) -> IcePolicy:
        """The policy of ``media``, its bind host resolved (so call this off the offer path)."""
        return cls(
            ports=media.udp_ports,
            bind_address=media.resolve_bind_host(),
            public_ip=media.public_ip,
        )

    @property
    def is_default(self) -> bool:
        return self.ports is None and not self.bind_address and not self.public_ip

    def advertised(self, address: str) -> str:
        """The address a host candidate bound to ``address`` announces."""
        if self.public_ip and ipaddress.ip_address(address).version == 4:
            return self.public_ip
        return address


class PolicyConnection(aioice.Connection):
    """An ``aioice.Connection`` whose host candidates follow an :class:`IcePolicy`."""

    def __init__(self, *args: Any, ice_policy: IcePolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ice_policy = ice_policy

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        """Host candidates by the policy, then aioice's server-reflexive and relayed ones."""
        hosts = await self._bind_hosts(component, addresses)
        # Registered like aioice's own host sockets: remote candidates are paired with these,
        # checks go out through them, and close() closes them.
        self._protocols += hosts
        candidates = [protocol.local_candidate for protocol in hosts]
        lookups = []
        if self.stun_server:
            lookups = [
                asyncio.wait_for(server_reflexive_candidate(p, self.stun_server), timeout)
                for p in hosts
                if ipaddress.ip_address(p.transport.get_extra_info("sockname")[0]).version == 4
            ]
        # Given no addresses, aioice binds nothing and asks no STUN server: it only allocates
        # the TURN relay, if there is a TURN server.
        results: list[Any] = await asyncio.gather(
            super().get_component_candidates(component, [], timeout),
            *lookups,
            return_exceptions=True,
        )
        relayed = results[0]
        if isinstance(relayed, BaseException):
            raise relayed
        for result in results[1:]:
            if isinstance(result, BaseException):
                log.info("%s: no server-reflexive candidate: %r", self, result)
            else:
                candidates.append(result[0])
        return candidates + relayed

    async def _bind_hosts(self, component: int, addresses: list[str]) -> list[StunProtocol]:
        policy = self.ice_policy
        hosts: list[StunProtocol] = []
        try:
            for address in [policy.bind_address] if policy.bind_address else addresses:
                try:
                    sock = bind_udp(address, policy.ports)
                except OSError as exc:  # NoFreePort is no OSError: it always ends the gathering
                    if policy.bind_address:
                        raise OSError(
                            exc.errno, f"cannot bind VOICEBOTS_BIND_HOST address {address}: {exc}"
                        ) from exc
                    log.info("%s: could not bind to %s - %s", self, address, exc)
                    continue
                hosts.append(await self._host_protocol(component, sock, policy))
        except BaseException:
            for protocol in hosts:
                protocol.transport.close()
            raise
        return hosts

    async def _host_protocol(
        self, component: int, sock: socket.socket, policy: IcePolicy
    ) -> StunProtocol:
        try:
            # The same receive buffer as aioice's own host sockets.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, turn.UDP_SOCKET_BUFFER_SIZE)
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        address, port = sock.getsockname()[:2]
        protocol.local_candidate = Candidate(
            # The foundation is computed from the base (bound) address, as RFC 8445 asks.
            foundation=candidate_foundation("host", "udp", address),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=policy.advertised(address),
            port=port,
            type="host",
        )
        return protocol


def install(policy: IcePolicy) -> None:
    """Make every ICE connection aiortc creates from now on, in this process, follow
    ``policy`` (the default policy gathers as aioice does)."""
    _check_aioice()
    if policy.is_default:
        setattr(aiortc.rtcicetransport, "Connection", aioice.Connection)  # noqa: B010
        return
    # aiortc's RTCIceGatherer looks this name up each time it creates a connection.
    connection = functools.partial(PolicyConnection, ice_policy=policy)
    setattr(aiortc.rtcicetransport, "Connection", connection)  # noqa: B010 - mypy forbids `=`


def _check_aioice() -> None:
    # PolicyConnection registers its sockets in aioice's private list of them; should a new
    # aioice change it, calls would silently fail ICE. Fail at start-up instead.
    probe = aioice.Connection(ice_controlling=False)
    if not isinstance(getattr(probe, "_protocols", None), list):
        raise RuntimeError(
            f"aioice {aioice.__version__} keeps no Connection._protocols list; "
            "media/ice.py must be updated for it"
        )


def uninstall() -> None:
    """Back to aioice's own ``Connection``."""
    setattr(aiortc.rtcicetransport, "Connection", aioice.Connection)  # noqa: B010


@contextlib.contextmanager
def installed(policy: IcePolicy) -> Iterator[None]:
    """:func:`install` for the duration of a ``with`` block (tests, tools)."""
    install(policy)
    try:
        yield
    finally:
        uninstall()


def peer_ice_servers(media: MediaConfig) -> list[RTCIceServer]:
    """The ICE servers of the bot's own peer connection.

    With a public IP configured the bot skips STUN: behind Fly.io's outbound NAT it would only
    discover the egress address, which does not forward to the bot, and each lookup costs a
    round trip on the offer path. TURN stays. (aiortc uses one STUN and one TURN server at
    most; clients get the full list in ``iceConfig``.) With a TURN secret the bot's TURN
    credentials are minted when its call gathers candidates, not when the idle bot was built.
    """
    servers: list[RTCIceServer] = []
    for url in media.ice_servers:
        if url.startswith("turn"):
            if media.turn_secret:
                servers.append(TimedTurnServer(url, media))
            else:
                servers.append(
                    RTCIceServer(
                        urls=url, username=media.turn_username, credential=media.turn_credential
                    )
                )
        elif not media.public_ip:
            servers.append(RTCIceServer(urls=url))
    return servers


class TimedTurnServer(RTCIceServer):
    """A TURN server whose time-limited credentials are minted as aiortc reads them.

    A warm bot builds its peer connection long before its call, but aiortc reads the ICE
    servers' credentials only when the offer arrives (it builds the ICE gatherer then), so
    minting on read gives the call a full ``turn_ttl``. aiortc reads ``username`` then
    ``credential``: each ``username`` read mints a new pair and ``credential`` is that pair's.
    """

    def __init__(self, url: str, media: MediaConfig) -> None:
        # Not the dataclass __init__: username and credential are properties here.
        self.urls = url
        self.credentialType = "password"
        self._media = media
        self._pair: tuple[str, str] | None = None

    @property
    def username(self) -> str:  # type: ignore[override]
        self._pair = self._media.turn_credentials(f"bot-{os.getpid()}")
        return self._pair[0]

    @property
    def credential(self) -> str:  # type: ignore[override]
        if self._pair is None:
            self._pair = self._media.turn_credentials(f"bot-{os.getpid()}")
        return self._pair[1]

    def __repr__(self) -> str:
        return f"TimedTurnServer(urls={self.urls!r})"
