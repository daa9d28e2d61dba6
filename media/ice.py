"""ICE the way a bot behind a firewall or a 1:1 NAT needs it.

aiortc gathers candidates through aioice, which binds one socket per interface address on a
port the kernel picks and advertises the address it bound. Neither library has a setting to
change that, so this module gives aioice's ``Connection`` a subclass whose host candidates
follow an :class:`IcePolicy` — bound inside ``VOICEBOTS_UDP_PORTS``, only on
``VOICEBOTS_BIND_HOST``'s address when it is set, and advertising ``VOICEBOTS_PUBLIC_IP``
instead of the private address — and :func:`install` makes aiortc build its ICE connections
from that subclass. STUN and TURN candidates, connectivity checks and consent stay aioice's.
What this needs of aioice's and aiortc's internals goes through :mod:`media.aiortc_adapter`.

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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aioice
from aioice import Candidate
from aiortc import RTCIceServer

from media import aiortc_adapter
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
        aiortc_adapter.add_host_protocols(self, hosts)
        candidates = [protocol.local_candidate for protocol in hosts]
        lookups = []
        if self.stun_server:
            lookups = [
                asyncio.wait_for(
                    aiortc_adapter.server_reflexive_candidate(p, self.stun_server), timeout
                )
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
                candidates.append(result)
        return candidates + relayed

    async def _bind_hosts(self, component: int, addresses: list[str]) -> list[Any]:
        """aioice's STUN protocols on host sockets bound by the policy."""
        policy = self.ice_policy
        hosts: list[Any] = []
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
                advertised = policy.advertised(sock.getsockname()[0])
                hosts.append(
                    await aiortc_adapter.open_host_protocol(self, sock, component, advertised)
                )
        except BaseException:
            for protocol in hosts:
                protocol.transport.close()
            raise
        return hosts


def install(policy: IcePolicy) -> None:
    """Make every ICE connection aiortc creates from now on, in this process, follow
    ``policy`` (the default policy gathers as aioice does)."""
    if policy.is_default:
        aiortc_adapter.set_ice_connection(None)
    else:
        aiortc_adapter.set_ice_connection(functools.partial(PolicyConnection, ice_policy=policy))


def uninstall() -> None:
    """Back to aioice's own ``Connection``."""
    aiortc_adapter.set_ice_connection(None)


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
