"""The ICE policy hook (media.ice) with real aiortc peers on loopback, and in the real bots."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aioice
import aiortc.rtcicetransport
import pytest
from aioice import stun
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from benchmarks.caller import CallOptions, SignalingClient, run_call
from benchmarks.harness import Redis, run_system
from media.config import MediaConfig
from media.ice import (
    IcePolicy,
    NoFreePort,
    installed,
    peer_ice_servers,
)
from media.ports import PortRange
from tests import FIXTURES

LOOPBACK = "127.0.0.1"
#: A documentation address (TEST-NET-2): advertised, never bound.
PUBLIC = "198.51.100.7"


@contextmanager
def free_ports(size: int, hold: bool = False) -> Iterator[PortRange]:
    """``size`` consecutive UDP ports free on loopback; with ``hold``, kept taken meanwhile."""
    for base in range(43000, 60000, size):
        held = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind((LOOPBACK, port))
        except OSError:
            for sock in held:
                sock.close()
            continue
        if not hold:
            for sock in held:
                sock.close()
        try:
            yield PortRange(base, base + size - 1)
        finally:
            for sock in held:
                sock.close()
        return
    raise RuntimeError(f"no {size} consecutive free UDP ports on {LOOPBACK}")


def candidates(sdp: str) -> list[tuple[str, int, str]]:
    """(address, port, type) of each distinct ``a=candidate`` line."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            entry = (parts[4], int(parts[5]), parts[7])
            if entry not in found:
                found.append(entry)
    return found


def bound_addresses(pc: RTCPeerConnection) -> list[tuple[str, int]]:
    """The local addresses of a peer's ICE sockets (through aiortc/aioice internals)."""
    connections = {
        t.receiver.transport.transport.iceGatherer._connection for t in pc.getTransceivers()
    }
    if pc.sctp is not None:
        connections.add(pc.sctp.transport.transport.iceGatherer._connection)
    return sorted(
        p.transport.get_extra_info("sockname")[:2] for c in connections for p in c._protocols
    )


def peer(ice_servers: list[RTCIceServer] | None = None) -> RTCPeerConnection:
    # Never aiortc's default configuration, which would ask Google's STUN server.
    return RTCPeerConnection(RTCConfiguration(iceServers=ice_servers or []))


def make_client() -> tuple[RTCPeerConnection, RTCDataChannel]:
    """The caller's side: audio plus a data channel, host candidates on loopback only."""
    with installed(IcePolicy(bind_address=LOOPBACK)):
        # aiortc creates a peer's ICE connections with its transceivers and channel.
        client = peer()
        client.addTransceiver("audio", direction="sendrecv")
        channel = client.createDataChannel("chat")
    return client, channel


async def answer(
    client: RTCPeerConnection, policy: IcePolicy, ice_servers: list[RTCIceServer] | None = None
) -> RTCPeerConnection:
    """A bot-side peer created under ``policy`` answers the client's offer."""
    await client.setLocalDescription(await client.createOffer())
    with installed(policy):
        bot = peer(ice_servers)
        await bot.setRemoteDescription(client.localDescription)
    await bot.setLocalDescription(await bot.createAnswer())
    return bot


async def echo_over_data_channel(
    client: RTCPeerConnection, channel: RTCDataChannel, bot: RTCPeerConnection
) -> str:
    """Connect the two, then send "ping" from the client; the bot echoes it back."""
    replies: asyncio.Queue[str] = asyncio.Queue()

    @bot.on("datachannel")
    def _channel(theirs: Any) -> None:
        theirs.on("message", lambda message: theirs.send(f"echo {message}"))

    channel.on("open", lambda: channel.send("ping"))
    channel.on("message", replies.put_nowait)
    await client.setRemoteDescription(bot.localDescription)
    return await asyncio.wait_for(replies.get(), 10)


@asynccontextmanager
async def closing(*peers: RTCPeerConnection) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for peer in peers:
            await peer.close()


async def test_host_candidates_bind_in_the_range_on_the_bind_address() -> None:
    with free_ports(8) as ports:
        client, channel = make_client()
        bot = await answer(client, IcePolicy(ports=ports, bind_address=LOOPBACK))
        async with closing(client, bot):
            found = candidates(bot.localDescription.sdp)
            # BUNDLE: one socket for audio and data, on the bind address only.
            assert len(found) == 1
            address, port, kind = found[0]
            assert (address, kind) == (LOOPBACK, "host") and port in ports
            assert bound_addresses(bot) == [(LOOPBACK, port)]
            assert await echo_over_data_channel(client, channel, bot) == "echo ping"
            assert bot.connectionState == "connected"


async def test_the_public_ip_is_advertised_in_place_of_the_bound_address() -> None:
    with free_ports(4) as ports:
        client, _ = make_client()
        bot = await answer(client, IcePolicy(ports=ports, bind_address=LOOPBACK, public_ip=PUBLIC))
        async with closing(client, bot):
            sdp = bot.localDescription.sdp
            [(address, port, kind)] = candidates(sdp)
            assert (address, kind) == (PUBLIC, "host") and port in ports
            # The default address of each m-line too, while the socket stays private.
            assert {line for line in sdp.splitlines() if line.startswith("c=")} == {
                f"c=IN IP4 {PUBLIC}"
            }
            assert LOOPBACK not in sdp
            assert bound_addresses(bot) == [(LOOPBACK, port)]


async def test_a_full_range_fails_the_answer_clearly() -> None:
    with free_ports(2, hold=True) as ports:
        client, _ = make_client()
        await client.setLocalDescription(await client.createOffer())
        with installed(IcePolicy(ports=ports, bind_address=LOOPBACK)):
            bot = peer()
            await bot.setRemoteDescription(client.localDescription)
        async with closing(client, bot):
            with pytest.raises(
                NoFreePort, match=f"no free UDP port in VOICEBOTS_UDP_PORTS={ports}"
            ):
                await bot.setLocalDescription(await bot.createAnswer())
            assert bound_addresses(bot) == []


async def test_the_default_policy_gathers_as_aioice_does() -> None:
    with installed(IcePolicy()):
        assert aiortc.rtcicetransport.Connection is aioice.Connection
    with installed(IcePolicy(public_ip=PUBLIC)):
        assert aiortc.rtcicetransport.Connection is not aioice.Connection
    assert aiortc.rtcicetransport.Connection is aioice.Connection


class _StunServer(asyncio.DatagramProtocol):
    """Answers binding requests with the sender's address, as any STUN server does."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.sendto(bytes(response), addr)


async def test_stun_still_works_through_the_policy_sockets() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_StunServer, local_addr=(LOOPBACK, 0))
    stun_url = f"stun:{LOOPBACK}:{transport.get_extra_info('sockname')[1]}"
    try:
        with free_ports(4) as ports:
            media = MediaConfig(ice_servers=(stun_url,), udp_ports=ports, bind_host=LOOPBACK)
            client, _ = make_client()
            bot = await answer(client, IcePolicy.from_config(media), peer_ice_servers(media))
            async with closing(client, bot):
                found = candidates(bot.localDescription.sdp)
                [host] = [c for c in found if c[2] == "host"]
                # The server-reflexive candidate is what the STUN server saw: the range port.
                assert (LOOPBACK, host[1], "srflx") in found
    finally:
        transport.close()


def test_bot_ice_servers() -> None:
    turn = "turn:turn.example.org:3478"
    media = MediaConfig(
        ice_servers=("stun:stun.example.org", turn), turn_username="u", turn_credential="c"
    )
    servers = peer_ice_servers(media)
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        ("stun:stun.example.org", None, None),
        (turn, "u", "c"),
    ]
    # Behind a 1:1 NAT, STUN could only find the egress address: the bot skips it.
    behind_nat = peer_ice_servers(MediaConfig(ice_servers=media.ice_servers, public_ip=PUBLIC))
    assert [s.urls for s in behind_nat] == [turn]


def test_real_bots_bind_and_advertise_by_the_settings(redis_server: Redis) -> None:
    """The spawner's bots (the connection bots.connection.prepare_connection builds) follow
    the settings: candidates in the range on the bind host's address, and a call connects."""

    async def offer_and_call(url: str) -> list[tuple[str, int, str]]:
        client = peer()
        client.addTransceiver("audio", direction="sendrecv")
        client.createDataChannel("chat")
        await client.setLocalDescription(await client.createOffer())
        async with SignalingClient(url) as signaling, closing(client):
            session = (await signaling.start())["sessionId"]
            reply = await signaling.offer(session, client.localDescription.sdp)
            await client.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
            await signaling.hangup(session)
        return candidates(reply["sdp"])

    with free_ports(8) as ports:
        env = {
            "VOICEBOTS_UDP_PORTS": str(ports),
            # Resolved through /etc/hosts, the way fly-global-services is on Fly.io.
            "VOICEBOTS_BIND_HOST": "localhost",
            # On loopback the "public" address is loopback too; the NAT case is test_media_nat.
            "VOICEBOTS_PUBLIC_IP": LOOPBACK,
            "VOICEBOTS_GREETING": "",
        }
        with run_system(redis_server, env, min_idle=1, max_bots=2) as system:
            found = asyncio.run(offer_and_call(system.url))
            result = asyncio.run(
                run_call(CallOptions(url=system.url, wav=FIXTURES / "hello.wav", max_seconds=20))
            )
    [(address, port, kind)] = found
    assert (address, kind) == (LOOPBACK, "host") and port in ports
    assert result.connected_s is not None, "the call did not connect"
    assert result.voiced_s > 0.5, "the caller heard no bot audio"
