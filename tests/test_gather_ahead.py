"""A warm bot's peer gathers its candidates and computes its fingerprints before the offer;
the answer uses them, and the caller connects."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcdtlstransport import RTCCertificate

from bots.config import BotConfig
from bots.connection import gather_ahead
from bots.process import Bot
from bots.protocol import Assign, Channel, Heartbeat
from media import certificates, interfaces
from media.ice import IcePolicy, installed
from tests.test_media_ice import LOOPBACK, candidates, free_ports, make_client


def _answerer() -> RTCPeerConnection:
    # As the bot's: max-bundle, no ICE servers.
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


async def _connected(*peers: RTCPeerConnection, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while any(pc.connectionState != "connected" for pc in peers):
            assert all(pc.connectionState not in ("failed", "closed") for pc in peers)
            await asyncio.sleep(0.02)


async def test_the_answer_carries_the_candidates_gathered_before_the_offer() -> None:
    client, _channel = make_client()
    bot = _answerer()
    try:
        with free_ports(4) as ports, installed(IcePolicy(ports=ports, bind_address=LOOPBACK)):
            await gather_ahead(bot)
        (transceiver,) = bot.getTransceivers()
        gatherer = transceiver.receiver.transport.transport.iceGatherer
        assert gatherer.state == "completed"
        ahead = [(c.ip, c.port) for c in gatherer.getLocalCandidates()]
        assert ahead and all(port in ports for _, port in ahead)

        await client.setLocalDescription(await client.createOffer())
        await bot.setRemoteDescription(RTCSessionDescription(client.localDescription.sdp, "offer"))
        await bot.setLocalDescription(await bot.createAnswer())
        answer = bot.localDescription.sdp
        assert [(ip, port) for ip, port, _ in candidates(answer)] == ahead
        # One transport for all: the offer's audio took the transceiver made ahead, and the
        # data channel is bundled on it.
        assert bot.getTransceivers() == [transceiver]
        assert bot.sctp is not None and bot.sctp.transport is transceiver.receiver.transport

        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await _connected(client, bot)
    finally:
        await bot.close()
        await client.close()


def test_a_certificate_computes_its_fingerprints_once() -> None:
    certificate = certificates.FingerprintedCertificate.generateCertificate()
    first = certificate.getFingerprints()
    assert first == RTCCertificate.getFingerprints(certificate)
    assert [f.algorithm for f in first] == ["sha-256", "sha-384", "sha-512"]
    first.clear()  # a caller's list is its own
    assert certificate.getFingerprints() == RTCCertificate.getFingerprints(certificate)


def test_peers_made_after_install_use_such_certificates() -> None:
    import aiortc.rtcpeerconnection

    certificates.install()
    try:
        assert aiortc.rtcpeerconnection.RTCCertificate is certificates.FingerprintedCertificate
    finally:
        certificates.uninstall()
    assert aiortc.rtcpeerconnection.RTCCertificate is RTCCertificate


@contextlib.contextmanager
def _idle_bot(**settings: float) -> Iterator[tuple[Bot, socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    try:
        yield Bot(BotConfig(**settings), ours), ours, theirs  # type: ignore[arg-type]
    finally:
        ours.close()
        theirs.close()


async def test_an_idle_bot_takes_its_first_message() -> None:
    with _idle_bot() as (bot, ours, theirs):
        bot._gathered_ahead = True
        channel, spawner = await Channel.open(ours), await Channel.open(theirs)
        await spawner.send(Assign(req=1, session_id="s1", sdp="v=0"))
        message = await asyncio.wait_for(bot._first_message(channel), 5)
        assert message == Assign(req=1, session_id="s1", sdp="v=0")


async def test_an_idle_bot_exits_when_the_addresses_change_under_its_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _idle_bot(heartbeat_interval=0.01) as (bot, ours, theirs):
        bot._gathered_ahead = True
        channel, spawner = await Channel.open(ours), await Channel.open(theirs)
        bot._channel = channel
        waiting = asyncio.ensure_future(bot._first_message(channel))
        changes = iter([False, False, True])
        monkeypatch.setattr(interfaces, "refresh", lambda: next(changes, False))
        heartbeat = asyncio.ensure_future(bot._heartbeat())
        try:
            assert await asyncio.wait_for(waiting, 5) is None
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        assert isinstance(await spawner.recv(), Heartbeat)


async def test_a_bot_in_a_call_keeps_its_candidates_when_the_addresses_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _idle_bot(heartbeat_interval=0.01) as (bot, ours, _theirs):
        bot._gathered_ahead = True
        bot._in_call = True  # a restart renegotiation gathers afresh, with the new addresses
        bot._channel = await Channel.open(ours)
        monkeypatch.setattr(interfaces, "refresh", lambda: True)
        heartbeat = asyncio.ensure_future(bot._heartbeat())
        await asyncio.sleep(0.05)
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        assert not bot._stale.is_set()
