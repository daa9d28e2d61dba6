"""A bot behind a 1:1 NAT, in network namespaces this test creates.

Topology (three namespaces, two veth pairs, nothing in the host's own namespace)::

    bot ns                         nat ns (the "cloud edge")                 client ns
    eth0 10.77.1.2 (+10.77.3.2) ── tobot 10.77.1.1 │ tocli 10.77.2.1 ── eth0 10.77.2.2
                                   DNAT 198.51.100.7 → 10.77.1.2          route to 198.51.100.7
                                   SNAT 10.77.1.2 → 198.51.100.7          only (no default)

The client can reach only the public address 198.51.100.7, and nothing reaches the client
that it did not ask for (the FORWARD chain lets through only DNATed client traffic and
replies), like a browser behind its own NAT. ``fly-global-services`` resolves to the bot's
private address through the namespace's own ``/etc/hosts`` (``ip netns exec`` mounts
``/etc/netns/<name>/hosts``), as it does on Fly.io.

Each peer is this module run as a program inside its namespace (``python -m
tests.test_media_nat bot|client``); they exchange offer and answer through the test over
stdin/stdout. The bot side is a bare aiortc peer configured exactly as the bots configure
theirs: ``MediaConfig.from_env`` → ``media.ice.install`` → ``media.ice.peer_ice_servers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from media.ports import PortRange
from tests import ROOT

PUBLIC_IP = "198.51.100.7"
BOT_IP = "10.77.1.2"
OTHER_BOT_IP = "10.77.3.2"
CLIENT_IP = "10.77.2.2"
PORTS = PortRange(41000, 41007)
#: aioice retransmits a check 6 times over 31.5 s; 3 times (7.5 s) keeps the failing case short.
RETRANSMISSIONS = 3
STEP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Namespaces:
    bot: str
    nat: str
    client: str


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def _in(ns: str, *command: str) -> str:
    return _run("ip", "netns", "exec", ns, *command)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[Namespaces]:
    if shutil.which("ip") is None:
        pytest.fail("the network-namespace test needs iproute2 (apt-get install iproute2)")
    tag = f"vb{os.getpid()}{secrets.token_hex(2)}"
    names = Namespaces(bot=f"{tag}-bot", nat=f"{tag}-nat", client=f"{tag}-cli")
    probe = subprocess.run(["ip", "netns", "add", names.bot], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here: {probe.stderr.strip()}")
    created = [names.bot]
    etc = Path("/etc/netns") / names.bot
    try:
        if shutil.which("iptables") is None:
            pytest.fail("the network-namespace test needs iptables (apt-get install iptables)")
        for ns in (names.nat, names.client):
            _run("ip", "netns", "add", ns)
            created.append(ns)
        for ns in created:
            _in(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        # Both veth pairs are created inside the nat namespace, their peers moved straight
        # into the others: no interface ever exists in the host's namespace.
        nat, bot, client = names.nat, names.bot, names.client
        _run("ip", "-n", nat, "link", "add", "tobot", "type", "veth", "peer", "eth0", "netns", bot)
        _run(
            "ip", "-n", nat, "link", "add", "tocli", "type", "veth", "peer", "eth0", "netns", client
        )
        for ns, dev, address in (
            (bot, "eth0", f"{BOT_IP}/24"),
            (bot, "eth0", f"{OTHER_BOT_IP}/24"),
            (nat, "tobot", "10.77.1.1/24"),
            (nat, "tocli", "10.77.2.1/24"),
            (client, "eth0", f"{CLIENT_IP}/24"),
        ):
            _run("ip", "-n", ns, "addr", "add", address, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        _run("ip", "-n", bot, "route", "add", "default", "via", "10.77.1.1")
        _run("ip", "-n", client, "route", "add", f"{PUBLIC_IP}/32", "via", "10.77.2.1")
        _in(nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ipt = ("ip", "netns", "exec", nat, "iptables")
        _run(
            *ipt,
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "tocli",
            "-d",
            PUBLIC_IP,
            "-j",
            "DNAT",
            "--to-destination",
            BOT_IP,
        )
        _run(
            *ipt,
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "tocli",
            "-s",
            BOT_IP,
            "-j",
            "SNAT",
            "--to-source",
            PUBLIC_IP,
        )
        _run(*ipt, "-P", "FORWARD", "DROP")
        _run(
            *ipt,
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        )
        _run(
            *ipt,
            "-A",
            "FORWARD",
            "-i",
            "tocli",
            "-o",
            "tobot",
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "-j",
            "ACCEPT",
        )
        etc.mkdir(parents=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{BOT_IP} fly-global-services\n")
        yield names
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@dataclass
class Call:
    answer: str
    bot: dict[str, Any]
    client: dict[str, Any]
    bot_sockets: list[tuple[str, int]]


def _udp_sockets(ns: str) -> list[tuple[str, int]]:
    """Every UDP socket bound in the namespace, as (address, port)."""
    found = []
    for line in _in(ns, "ss", "-H", "-u", "-a", "-n").splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        found.append((address, int(port)))
    return sorted(found)


def _call(names: Namespaces, bot_env: dict[str, str]) -> Call:
    """Negotiate between a bot peer and a client peer in their namespaces; report both."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICEBOTS_")}
    command = [sys.executable, "-m", "tests.test_media_nat"]
    logs = {role: tempfile.TemporaryFile("w+") for role in ("bot", "client")}
    peers = {
        role: subprocess.Popen(
            ["ip", "netns", "exec", ns, *command, role],
            cwd=ROOT,
            env={**env, **(bot_env if role == "bot" else {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logs[role],
            text=True,
        )
        for role, ns in (("bot", names.bot), ("client", names.client))
    }

    def read(role: str) -> dict[str, Any]:
        stdout = peers[role].stdout
        assert stdout is not None
        line = stdout.readline()  # each peer gives up after STEP_TIMEOUT, closing its stdout
        if not line:
            peers[role].wait(5)
            logs[role].seek(0)
            raise RuntimeError(
                f"{role} peer exited ({peers[role].returncode}):\n{logs[role].read()[-4000:]}"
            )
        message: dict[str, Any] = json.loads(line)
        return message

    def send(role: str, message: dict[str, Any]) -> None:
        stdin = peers[role].stdin
        assert stdin is not None
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()

    try:
        send("bot", read("client"))  # the offer
        answer = read("bot")
        send("client", answer)
        client, bot = read("client"), read("bot")
        sockets = _udp_sockets(names.bot)
        for role in peers:
            send(role, {"close": True})
        return Call(answer=answer["sdp"], bot=bot, client=client, bot_sockets=sockets)
    finally:
        for process in peers.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait(5)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        for log in logs.values():
            log.close()


def _candidates(sdp: str) -> set[tuple[str, int, str]]:
    return {
        (p[4], int(p[5]), p[7])
        for p in (line.split() for line in sdp.splitlines())
        if p and p[0].startswith("a=candidate:")
    }


BOT_ENV = {
    "VOICEBOTS_UDP_PORTS": str(PORTS),
    "VOICEBOTS_BIND_HOST": "fly-global-services",
}


def test_the_client_reaches_only_the_public_address(namespaces: Namespaces) -> None:
    client = namespaces.client
    assert "via 10.77.2.1" in _run("ip", "-n", client, "route", "get", PUBLIC_IP)
    for private in (BOT_IP, OTHER_BOT_IP):
        probe = subprocess.run(
            ["ip", "-n", client, "route", "get", private], capture_output=True, text=True
        )
        assert probe.returncode != 0 and "unreachable" in probe.stderr, probe


def test_call_connects_through_the_nat_with_the_public_ip_advertised(
    namespaces: Namespaces,
) -> None:
    call = _call(namespaces, {**BOT_ENV, "VOICEBOTS_PUBLIC_IP": PUBLIC_IP})

    # One candidate: the public address, on a port of the range, bound on the bind host only.
    [(address, port, kind)] = _candidates(call.answer)
    assert (address, kind) == (PUBLIC_IP, "host") and port in PORTS
    assert call.client["state"] == "connected", call.client
    assert call.bot["state"] == "connected", call.bot
    # The media path is the NAT's public side; data and audio flowed both ways over it.
    assert call.client["remote"] == [PUBLIC_IP, port]
    assert call.client["echo"] == "echo ping"
    assert call.client["audio_frames"] > 0 and call.bot["audio_frames"] > 0
    # Every UDP socket the bot holds is on its private bind address, inside the range.
    assert call.bot_sockets == [(BOT_IP, port)]


def test_call_fails_without_the_public_ip(namespaces: Namespaces) -> None:
    call = _call(namespaces, BOT_ENV)

    # The answer offers the private address, which the client cannot reach.
    [(address, port, _)] = _candidates(call.answer)
    assert address == BOT_IP and port in PORTS
    assert call.client["state"] == "failed", call.client
    assert call.client["echo"] is None and call.client["audio_frames"] == 0


# --- the peers, run as `python -m tests.test_media_nat bot|client` inside a namespace ---


async def _peer(role: str) -> int:
    from aioice import stun
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack

    from media import ice
    from media.config import MediaConfig

    stun.RETRY_MAX = RETRANSMISSIONS
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def emit(message: dict[str, Any]) -> None:
        print(json.dumps(message), flush=True)

    async def receive() -> dict[str, Any]:
        line = await asyncio.wait_for(reader.readline(), STEP_TIMEOUT)
        message: dict[str, Any] = json.loads(line)
        return message

    if role == "bot":
        # What bots.connection.prepare_connection does, minus pipecat.
        media = MediaConfig.from_env(os.environ)
        ice.install(ice.IcePolicy.from_config(media))
        servers = ice.peer_ice_servers(media)
    else:
        servers = []
    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
    report: dict[str, Any] = {"audio_frames": 0, "echo": None, "remote": None}
    echoed = asyncio.Event()
    heard = asyncio.Event()

    async def listen(track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                report["audio_frames"] += 1
                heard.set()

    listening: set[asyncio.Task[None]] = set()
    pc.on("track", lambda track: listening.add(asyncio.create_task(listen(track))))

    if role == "bot":

        @pc.on("datachannel")
        def _channel(channel: Any) -> None:
            channel.on("message", lambda message: channel.send(f"echo {message}"))

        offer = await receive()
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createAnswer())
        emit({"sdp": pc.localDescription.sdp})
        echoed.set()  # the client checks the echo
    else:
        pc.addTrack(AudioStreamTrack())
        channel = pc.createDataChannel("chat")
        channel.on("open", lambda: channel.send("ping"))

        @channel.on("message")
        def _reply(message: str) -> None:
            report["echo"] = message
            echoed.set()

        await pc.setLocalDescription(await pc.createOffer())
        emit({"sdp": pc.localDescription.sdp})
        answer = await receive()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline and pc.connectionState not in ("failed", "closed"):
        if pc.connectionState == "connected" and echoed.is_set() and heard.is_set():
            break
        await asyncio.sleep(0.05)
    report["state"] = pc.connectionState
    if pc.connectionState == "connected" and pc.sctp is not None:
        # The nominated pair, from aioice (aiortc does not expose it).
        pair = pc.sctp.transport.transport._connection._nominated.get(1)
        report["remote"] = list(pair.remote_addr) if pair is not None else None
    emit(report)
    await receive()  # "close"
    await pc.close()
    for task in listening:
        task.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_peer(sys.argv[1])))
