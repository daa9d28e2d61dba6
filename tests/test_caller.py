"""The headless caller against a stand-in for signaling: the same HTTP contract, served by
Starlette on uvicorn on a loopback port, with a bare aiortc peer per session that echoes the
caller's audio and says one JSON message on the data channel."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.sdp import candidate_from_sdp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.caller import MAX_ARRIVALS, CallError, CallOptions, PacketArrivals, main, run_call
from media import audio

TONE_START, TONE_END, WAV_SECONDS = 0.3, 0.9, 1.3


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class EchoSignaling:
    """Just enough of signaling's public contract, with an echoing aiortc peer behind it."""

    def __init__(self) -> None:
        self.full = False
        self.sessions: dict[str, dict[str, Any]] = {}
        self.peers: dict[str, RTCPeerConnection] = {}
        self.patched: list[dict[str, Any]] = []
        self.channel_messages: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/start", self.start, methods=["POST"]),
                Route("/sessions/{sid}/api/offer", self.offer, methods=["POST"]),
                Route("/sessions/{sid}/api/offer", self.patch, methods=["PATCH"]),
                Route("/api/sessions/{sid}", self.get, methods=["GET"]),
                Route("/api/sessions/{sid}", self.delete, methods=["DELETE"]),
            ]
        )

    async def start(self, request: Request) -> JSONResponse:
        if self.full:
            return _error(503, "no_capacity", "no warm bot", **{"Retry-After": "2"})
        sid = uuid.uuid4().hex
        self.sessions[sid] = {"session_id": sid, "status": "active", "transcript": []}
        return JSONResponse({"sessionId": sid, "iceConfig": {"iceServers": []}})

    async def offer(self, request: Request) -> JSONResponse:
        session = self.sessions.get(request.path_params["sid"])
        if session is None:
            return _error(404, "unknown_session", "no such session")
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        pc_id = f"echo-{uuid.uuid4().hex}"
        self.peers[pc_id] = pc
        session["pc_id"] = pc_id

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            channel.on("message", self.channel_messages.append)
            bot_ready = {"label": "rtvi-ai", "type": "bot-ready", "data": {"version": "2.2.0"}}
            channel.send(json.dumps(bot_ready))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        transceiver = pc.getTransceivers()[0]
        transceiver.direction = "sendrecv"
        transceiver.sender.replaceTrack(transceiver.receiver.track)  # the echo
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription
        return JSONResponse({"sdp": answer.sdp, "type": answer.type, "pc_id": pc_id})

    async def patch(self, request: Request) -> JSONResponse:
        body = await request.json()
        pc = self.peers.get(body.get("pc_id"))
        if pc is None:
            return _error(404, "unknown_pc", "no such peer connection")
        for item in body["candidates"]:
            self.patched.append(item)
            candidate = candidate_from_sdp(item["candidate"])
            candidate.sdpMid = item["sdp_mid"]
            candidate.sdpMLineIndex = item["sdp_mline_index"]
            await pc.addIceCandidate(candidate)
        return JSONResponse({"status": "success"})

    async def get(self, request: Request) -> JSONResponse:
        session = self.sessions.get(request.path_params["sid"])
        if session is None:
            return _error(404, "unknown_session", "no such session")
        return JSONResponse(session)

    async def delete(self, request: Request) -> JSONResponse:
        session = self.sessions.get(request.path_params["sid"])
        if session is None:
            return _error(404, "unknown_session", "no such session")
        task = asyncio.create_task(self._end(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JSONResponse({"status": "ending"})

    async def _end(self, session: dict[str, Any]) -> None:
        pc = self.peers.pop(session.get("pc_id", ""), None)
        if pc is not None:
            await pc.close()
        # Still "active" for a moment, as while a real bot flushes its transcript.
        await asyncio.sleep(0.3)
        line = {"role": "assistant", "text": "echo", "ts": time.time()}
        session.update(status="completed", transcript=[line])

    async def close(self) -> None:
        await asyncio.gather(*self._tasks)
        for pc in list(self.peers.values()):
            await pc.close()
        self.peers.clear()


@pytest.fixture
async def signaling() -> AsyncIterator[tuple[EchoSignaling, str]]:
    fake = EchoSignaling()
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    # A socket bound and listening before uvicorn starts: connections queue in its backlog,
    # so the port is usable at once. proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY only
    # on such sockets, and without it Nagle + delayed ACK add ~40 ms to every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()
        await fake.close()


@pytest.fixture
def speech_wav(tmp_path: Path) -> Path:
    """0.3 s of silence, 0.6 s of a 440 Hz tone at -12 dBFS, 0.4 s of silence."""
    t = np.arange(round((TONE_END - TONE_START) * 48000)) / 48000
    tone = (0.25 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
    lead = np.zeros(round(TONE_START * 48000), np.int16)
    tail = np.zeros(round((WAV_SECONDS - TONE_END) * 48000), np.int16)
    path = tmp_path / "speech.wav"
    audio.write_wav(path, np.concatenate([lead, tone, tail]))
    return path


async def test_call_records_echo_and_ends_on_reply(
    signaling: tuple[EchoSignaling, str], speech_wav: Path, tmp_path: Path
) -> None:
    fake, url = signaling
    record = tmp_path / "bot.wav"
    options = CallOptions(url=url, wav=speech_wav, record=record, reply_silence=0.5, max_seconds=8)

    result = await run_call(options)

    assert result.end_reason == "reply"
    assert result.pc_id.startswith("echo-")
    assert result.status == "completed"
    assert [(line["role"], line["text"]) for line in result.transcript] == [("assistant", "echo")]
    # The 0.6 s tone came back, give or take a frame at each edge.
    assert 0.5 <= result.voiced_s <= 0.7
    assert result.played_at is not None and result.first_audio_at is not None
    assert result.first_rtp_at is not None and result.first_rtp_at <= result.first_audio_at
    echo_latency = result.first_audio_at - (result.played_at + TONE_START)
    assert 0 < echo_latency < 0.5
    assert result.connected_s is not None and result.answer_s < 2
    assert [m.type for m in result.messages] == ["bot-ready"]
    # What the JS transport says once its channel opens, then pings.
    sent = [json.loads(m) for m in fake.channel_messages if not m.startswith("ping")]
    assert sent[0]["message"] == {"type": "trackStatus", "receiver_index": 0, "enabled": True}
    assert sent[1]["type"] == "client-ready" and sent[1]["label"] == "rtvi-ai"
    assert any(m.startswith("ping: ") for m in fake.channel_messages)
    recorded = audio.read_wav(record)
    assert recorded.size == result.bot_audio.size
    assert audio.speech_end(recorded) is not None
    first_rtp = result.first_rtp_at - result.played_at
    print(
        f"\nanswer {result.answer_s * 1000:.1f} ms, connected {result.connected_s * 1000:.1f} ms, "
        f"echo latency {echo_latency * 1000:.1f} ms, first RTP {first_rtp * 1000:.1f} ms after "
        "playback began"
    )


async def test_trickle_candidates_by_patch(
    signaling: tuple[EchoSignaling, str], speech_wav: Path
) -> None:
    fake, url = signaling
    options = CallOptions(url=url, wav=speech_wav, trickle=True, reply_silence=0.3, max_seconds=8)

    result = await run_call(options)

    assert fake.patched and all(c["candidate"].startswith("candidate:") for c in fake.patched)
    assert {(c["sdp_mid"], c["sdp_mline_index"]) for c in fake.patched} == {("0", 0)}
    assert result.end_reason == "reply" and result.voiced_s > 0.5


async def test_no_capacity_is_a_call_error_with_retry_after(
    signaling: tuple[EchoSignaling, str], speech_wav: Path
) -> None:
    fake, url = signaling
    fake.full = True

    with pytest.raises(CallError) as caught:
        await run_call(CallOptions(url=url, wav=speech_wav))

    assert caught.value.status == 503
    assert caught.value.code == "no_capacity"
    assert caught.value.retry_after == 2.0
    assert not fake.sessions


async def test_cli_prints_transcript_and_writes_record(
    signaling: tuple[EchoSignaling, str],
    speech_wav: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = signaling
    record = tmp_path / "cli.wav"
    argv = ["call", url, "--wav", str(speech_wav), "--record", str(record)]
    argv += ["--reply-silence", "0.3", "--max-seconds", "8"]

    # main() runs its own event loop, so it gets a thread; the server stays on this loop.
    code = await asyncio.to_thread(main, argv)

    out = capsys.readouterr().out
    assert code == 0
    assert "assistant: echo" in out and "completed (reply)" in out
    assert not audio.is_silent(audio.read_wav(record))


async def test_cli_error_exit_code(capsys: pytest.CaptureFixture[str], speech_wav: Path) -> None:
    # A port nobody listens on: the caller must fail cleanly, not hang.
    code = await asyncio.to_thread(main, ["http://127.0.0.1:9", "--wav", str(speech_wav)])

    assert code == 1
    assert "unreachable" in capsys.readouterr().err


def test_audio_helpers(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.5 * 32767 * np.sin(2 * math.pi * 300 * t)).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    path = tmp_path / "stereo16k.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.concatenate([stereo, np.zeros(2 * rate, np.int16)]).tobytes())

    samples = audio.read_wav(path, 48000)

    assert samples.dtype == np.int16 and abs(samples.size - 2 * 48000) <= 1
    assert audio.dbfs(samples[:48000]) == pytest.approx(
        20 * math.log10(0.5 / math.sqrt(2)), abs=0.2
    )
    assert audio.speech_end(samples) == pytest.approx(1.0, abs=0.01)
    assert audio.speech_start(path) == pytest.approx(0.0, abs=0.01)
    assert audio.is_silent(samples[-4800:]) and not audio.is_silent(samples[:4800])
    assert audio.dbfs(np.zeros(10, np.int16)) == float("-inf")
    assert audio.speech_end(np.zeros(10, np.int16)) is None


def test_a_decoded_frame_finds_its_packet_arrival_across_the_timestamp_wrap() -> None:
    arrivals = PacketArrivals()
    assert arrivals.of(0) is None
    first = (1 << 32) - 960  # the next packet's timestamp wraps to 0
    for n in range(3):
        arrivals.note((first + n * 960) % (1 << 32), at=10.0 + n * 0.02)
    assert arrivals.of(0) == 10.0
    assert arrivals.of(960) == 10.02 and arrivals.of(1920) == 10.04
    assert arrivals.of(2880) is None  # not arrived yet
    for n in range(3, 3 + MAX_ARRIVALS):
        arrivals.note((first + n * 960) % (1 << 32), at=10.0 + n * 0.02)
    assert arrivals.of(0) is None  # forgotten: only the last MAX_ARRIVALS are kept
    assert arrivals.of((2 + MAX_ARRIVALS) * 960) is not None
