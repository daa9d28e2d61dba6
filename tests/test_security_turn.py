"""Short-lived TURN credentials (the TURN REST scheme), checked by a real coturn.

With ``VOICEBOTS_TURN_SECRET`` every ``iceConfig`` carries its own credentials, valid 300 s
past ``VOICEBOTS_MAX_CALL_SECONDS``: username ``"<expiry>:<session id>"``, credential
base64(HMAC-SHA1(secret, username)) — what coturn's ``use-auth-secret`` checks without
storing any user. The bots mint theirs when a call gathers candidates.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aioice import stun, turn
from aiortc import RTCPeerConnection

from benchmarks.harness import Redis, free_port, run_system
from media.config import MediaConfig, turn_rest_credentials
from media.ice import TimedTurnServer, peer_ice_servers

SECRET = "turn-shared-secret-7c1e9a"
REALM = "voicebots.test"


def _config(longest_call: str = "300", url: str = "turn:127.0.0.1:3478") -> MediaConfig:
    """Credentials valid the longest call and 300 s more: 600 s by default."""
    return MediaConfig.from_env(
        {
            "VOICEBOTS_ICE_SERVERS": f"stun:127.0.0.1:3478,{url}",
            "VOICEBOTS_TURN_SECRET": SECRET,
            "VOICEBOTS_MAX_CALL_SECONDS": longest_call,
        }
    )


def _expected(username: str) -> str:
    return base64.b64encode(
        hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    ).decode()


def test_ice_config_carries_per_session_time_limited_credentials() -> None:
    before = time.time()
    servers = _config(longest_call="600").ice_config("sess42")["iceServers"]
    assert servers[0] == {"urls": "stun:127.0.0.1:3478"}
    expiry, name = servers[1]["username"].split(":")
    assert name == "sess42"
    assert before + 900 <= int(expiry) + 1 and int(expiry) <= time.time() + 900
    assert servers[1]["credential"] == _expected(servers[1]["username"])
    assert SECRET not in repr(_config())


def test_bots_mint_their_credentials_when_read() -> None:
    media = _config()
    (server,) = [s for s in peer_ice_servers(media) if isinstance(s, TimedTurnServer)]
    assert server.urls == "turn:127.0.0.1:3478" and server.credentialType == "password"
    # aiortc reads username, then credential: the pair matches, minted at that moment.
    username, credential = server.username, server.credential
    assert username.endswith(":bot-" + username.split(":bot-")[1])
    assert credential == _expected(username)
    assert abs(int(username.split(":")[0]) - (time.time() + 600)) <= 2
    assert SECRET not in repr(server)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                "VOICEBOTS_ICE_SERVERS": "turn:t.example.org",
                "VOICEBOTS_TURN_SECRET": SECRET,
                "VOICEBOTS_TURN_USERNAME": "u",
                "VOICEBOTS_TURN_CREDENTIAL": "c",
            },
            "set either VOICEBOTS_TURN_SECRET (time-limited credentials) or "
            "VOICEBOTS_TURN_USERNAME/VOICEBOTS_TURN_CREDENTIAL (static ones), not both",
        ),
        (
            {"VOICEBOTS_TURN_SECRET": SECRET},
            "VOICEBOTS_TURN_SECRET is set but VOICEBOTS_ICE_SERVERS has no turn: or turns: server",
        ),
        (
            {
                "VOICEBOTS_ICE_SERVERS": "turn:t.example.org",
                "VOICEBOTS_TURN_SECRET": SECRET,
                "VOICEBOTS_MAX_CALL_SECONDS": "0.5",
            },
            "VOICEBOTS_MAX_CALL_SECONDS must be >= 1.0",
        ),
    ],
)
def test_bad_turn_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        MediaConfig.from_env(env)
    assert str(caught.value).startswith(message)
    assert SECRET not in str(caught.value)


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A coturn accepting REST-scheme credentials under SECRET; yields its port."""
    server = shutil.which("turnserver")
    if server is None:
        pytest.skip("coturn is not installed (apt-get install coturn); .ci/run installs it")
    port = free_port()
    work = tmp_path_factory.mktemp("coturn")
    log = work / "turn.log"
    process = subprocess.Popen(
        [
            server,
            "-n",
            f"--listening-port={port}",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            f"--realm={REALM}",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            f"--log-file={log}",
            "--simple-log",
            "--no-stdout-log",
            f"--pidfile={work / 'turn.pid'}",
            f"--userdb={work / 'turndb'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_udp(port, process, log)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_udp(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server answers a STUN Binding request (which needs no credentials)."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    deadline = time.monotonic() + 15
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"turnserver exited: {log.read_text()[-2000:]}")
            sock.sendto(bytes(request), ("127.0.0.1", port))
            try:
                sock.recv(2048)
                return
            except OSError:
                continue
    raise TimeoutError(f"turnserver not ready: {log.read_text()[-2000:] if log.exists() else ''}")


async def _allocate(port: int, username: str, password: str) -> tuple[str, int]:
    transport, _protocol = await turn.create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", port), username, password
    )
    try:
        relayed: tuple[str, int] = transport.get_extra_info("related_address")
        return relayed
    finally:
        transport.close()


async def test_coturn_accepts_fresh_credentials_and_refuses_expired_ones(coturn: int) -> None:
    media = _config()
    relayed = await _allocate(coturn, *media.turn_credentials("sess-1"))
    assert relayed[0] == "127.0.0.1"

    expired = media.turn_credentials("sess-1", now=time.time() - 2 * media.turn_ttl)
    forged = turn_rest_credentials("not the secret", f"{int(time.time()) + 600}:sess-1")
    for username, password in (expired, forged):
        with pytest.raises(stun.TransactionFailed) as caught:
            await _allocate(coturn, username, password)
        assert caught.value.response.attributes["ERROR-CODE"][0] == 401


async def test_a_bot_allocates_a_relay_with_its_own_credentials(
    redis_server: Redis, coturn: int
) -> None:
    env = {
        "VOICEBOTS_ICE_SERVERS": f"turn:127.0.0.1:{coturn}",
        "VOICEBOTS_TURN_SECRET": SECRET,
    }
    peer = RTCPeerConnection()
    peer.addTransceiver("audio", direction="sendrecv")
    peer.createDataChannel("chat")
    await peer.setLocalDescription(await peer.createOffer())
    with run_system(redis_server, env, min_idle=1, max_bots=2) as system:
        async with httpx.AsyncClient(base_url=system.url, timeout=20) as client:
            started = (await client.post("/start", json={})).json()
            session = started["sessionId"]
            answer = await client.post(
                f"/sessions/{session}/api/offer",
                json={"sdp": peer.localDescription.sdp, "type": "offer"},
            )
            await client.delete(f"/api/sessions/{session}")
        await peer.close()

    (turn_server,) = started["iceConfig"]["iceServers"]
    assert turn_server["username"].endswith(f":{session}")
    assert turn_server["credential"] == _expected(turn_server["username"])
    assert answer.status_code == 200, answer.text
    relay = [ln for ln in answer.json()["sdp"].splitlines() if " typ relay" in ln]
    assert relay, "coturn refused the bot's credentials: no relayed candidate in the answer"
