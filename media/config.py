"""WebRTC settings shared by the bots (which bind and advertise) and signaling (which tells
clients which ICE servers to use)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from common.env import Environ
from common.settings import (
    BIND_HOST,
    CREDENTIAL_MARGIN,
    ICE_SERVERS,
    MAX_CALL_SECONDS,
    PUBLIC_IP,
    TURN_CREDENTIAL,
    TURN_SECRET,
    TURN_USERNAME,
    UDP_PORTS,
    credential_ttl,
)
from media.ports import PortRange

__all__ = ["MediaConfig", "turn_rest_credentials"]

# What aiortc (and browsers) accept: RFC 7064 / 7065 URIs, TURN with an optional transport.
_ICE_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s?:\[\]/@]+)(?::\d{1,5})?"
    r"(?P<query>\?transport=(?:udp|tcp))?"
)
_WILDCARDS = frozenset({"0.0.0.0", "::", "*", "[::]"})
_HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?")


@dataclass(frozen=True)
class MediaConfig:
    #: STUN/TURN URLs given to both peers, e.g. ``stun:stun.example.org:3478``. Empty by
    #: default: on loopback and on a LAN host candidates are enough.
    ice_servers: tuple[str, ...] = ()
    #: Credentials of the ``turn:``/``turns:`` servers in ``ice_servers`` (static ones: every
    #: client that calls ``POST /start`` receives them).
    turn_username: str = ""
    turn_credential: str = field(default="", repr=False)
    #: The TURN server's shared secret (coturn ``static-auth-secret``): in place of static
    #: credentials, each client gets its own, valid ``turn_ttl`` seconds.
    turn_secret: str = field(default="", repr=False)
    #: Long enough for the longest call (``VOICEBOTS_MAX_CALL_SECONDS``): a TURN server
    #: refuses to refresh an allocation once its credentials have expired.
    turn_ttl: float = MAX_CALL_SECONDS.default + CREDENTIAL_MARGIN
    #: ICE host candidates bind inside this range; ``None``: any port the kernel picks.
    udp_ports: PortRange | None = None
    #: Name or address of the one address ICE binds (Fly.io: ``fly-global-services``);
    #: empty: every interface address, as aiortc does by default.
    bind_host: str = ""
    #: Advertised in host candidates in place of the bound (private) IPv4 address: the
    #: public side of a 1:1 NAT, which STUN cannot discover behind Fly.io's outbound NAT.
    public_ip: str = ""

    @classmethod
    def from_env(cls, environ: Environ) -> MediaConfig:
        servers = ICE_SERVERS.read(environ)
        for url in servers:
            match = _ICE_URL.fullmatch(url)
            if match is None or (match["scheme"].startswith("stun") and match["query"]):
                raise ValueError(
                    "VOICEBOTS_ICE_SERVERS entries must look like stun:host[:port] or "
                    f"turn:host[:port][?transport=udp|tcp] (or stuns:, turns:), got {url!r}"
                )
        has_turn = any(url.startswith("turn") for url in servers)
        username = TURN_USERNAME.read(environ)
        credential = TURN_CREDENTIAL.read(environ)
        secret = TURN_SECRET.read(environ)
        if secret and (username or credential):
            raise ValueError(
                "set either VOICEBOTS_TURN_SECRET (time-limited credentials) or "
                "VOICEBOTS_TURN_USERNAME/VOICEBOTS_TURN_CREDENTIAL (static ones), not both"
            )
        if has_turn and not (secret or (username and credential)):
            raise ValueError(
                "a turn: server in VOICEBOTS_ICE_SERVERS needs VOICEBOTS_TURN_USERNAME and "
                "VOICEBOTS_TURN_CREDENTIAL, or VOICEBOTS_TURN_SECRET for time-limited ones"
            )
        if (username or credential) and not has_turn:
            raise ValueError(
                "VOICEBOTS_TURN_USERNAME/VOICEBOTS_TURN_CREDENTIAL are set but "
                "VOICEBOTS_ICE_SERVERS has no turn: or turns: server"
            )
        if secret and not has_turn:
            raise ValueError(
                "VOICEBOTS_TURN_SECRET is set but VOICEBOTS_ICE_SERVERS has no turn: or turns: "
                "server"
            )
        ports = UDP_PORTS.read(environ)
        return cls(
            ice_servers=servers,
            turn_username=username,
            turn_credential=credential,
            turn_secret=secret,
            turn_ttl=credential_ttl(environ),
            udp_ports=PortRange.parse(ports, UDP_PORTS.name) if ports else None,
            bind_host=_bind_host(BIND_HOST.read(environ)),
            public_ip=_public_ip(PUBLIC_IP.read(environ)),
        )

    @property
    def shapes_ice(self) -> bool:
        """Whether ICE gathering differs from aiortc's default (see :mod:`media.ice`)."""
        return self.udp_ports is not None or bool(self.bind_host or self.public_ip)

    def resolve_bind_host(self) -> str:
        """The address ``bind_host`` names (an IPv4 one if it has both), or ``""``.

        Names are resolved once per process, through the system resolver (``/etc/hosts``
        holds ``fly-global-services`` on Fly.io), never on the offer path.
        """
        if not self.bind_host:
            return ""
        try:
            infos = socket.getaddrinfo(self.bind_host, None, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            raise ValueError(
                f"VOICEBOTS_BIND_HOST {self.bind_host!r} does not resolve here: {exc}"
            ) from None
        addresses = [str(info[4][0]) for info in infos]
        ipv4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
        address = (ipv4 or addresses)[0]
        if self.public_ip and not ipv4:
            raise ValueError(
                f"VOICEBOTS_BIND_HOST {self.bind_host!r} has no IPv4 address ({address}) for "
                f"VOICEBOTS_PUBLIC_IP {self.public_ip} to stand for"
            )
        return address

    def turn_credentials(self, name: str, now: float | None = None) -> tuple[str, str]:
        """(username, credential) for the TURN servers: minted for ``name`` (and valid
        ``turn_ttl`` seconds from ``now``) with a TURN secret, else the static ones."""
        if not self.turn_secret:
            return self.turn_username, self.turn_credential
        expires = int((time.time() if now is None else now) + self.turn_ttl)
        return turn_rest_credentials(self.turn_secret, f"{expires}:{name}")

    def ice_config(self, name: str = "voicebots") -> dict[str, Any]:
        """The ``iceConfig`` object returned to clients by ``POST /start``; ``name`` (the
        session id) goes into time-limited TURN usernames, so TURN logs name the call."""
        servers: list[dict[str, Any]] = []
        credentials = self.turn_credentials(name)
        for url in self.ice_servers:
            server: dict[str, Any] = {"urls": url}
            if url.startswith("turn"):
                server["username"], server["credential"] = credentials
            servers.append(server)
        return {"iceServers": servers}


def turn_rest_credentials(secret: str, username: str) -> tuple[str, str]:
    """The TURN REST API's credential for ``username`` (``"<expiry>:<name>"``): base64 of
    HMAC-SHA1 under the secret shared with the TURN server (coturn ``use-auth-secret``),
    which checks it and the expiry without storing any user."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _bind_host(value: str) -> str:
    if value in _WILDCARDS:
        raise ValueError(
            f"VOICEBOTS_BIND_HOST must name one address (e.g. fly-global-services or 10.0.0.5), "
            f"not the wildcard {value!r}: replies would leave from whichever address the kernel "
            "picks; leave it empty to use every interface address"
        )
    if value and not (_HOST_NAME.fullmatch(value) or _is_ip(value)):
        raise ValueError(f"VOICEBOTS_BIND_HOST must be a host name or an address, got {value!r}")
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _public_ip(value: str) -> str:
    if not value:
        return ""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if not isinstance(address, ipaddress.IPv4Address) or address.is_unspecified:
        raise ValueError(f"VOICEBOTS_PUBLIC_IP must be an IPv4 address, got {value!r}")
    return str(address)
