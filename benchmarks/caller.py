"""The headless caller: a WebRTC client of the public HTTP contract, without a browser.

It negotiates the way ``@pipecat-ai/small-webrtc-transport`` does (``POST /start``, then an
offer to ``/sessions/{id}/api/offer``, a data channel with trackStatus, ``client-ready`` and a
ping every second), plays a WAV as the microphone in real time, records the bot, and hangs up
once the bot has answered and gone quiet. The end-to-end tests, the benchmark (many concurrent
:func:`run_call`) and ``voicebots call`` are built on it.

All instants are ``time.monotonic()`` seconds, so they compare across one process only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from benchmarks.signaling_client import (
    CallError,
    SignalingClient,
    candidates_from_sdp,
    strip_candidates,
)
from media import aiortc_adapter
from media.audio import (
    DEFAULT_SILENCE_DBFS,
    Samples,
    is_silent,
    read_wav,
    resample,
    speech_end,
    write_wav,
)
from media.jitter import tune_audio_receivers
from media.tracks import SAMPLE_RATE, WavTrack, frame_to_mono

__all__ = [
    "Call",
    "CallError",
    "CallOptions",
    "CallResult",
    "PacketArrivals",
    "RtviMessage",
    "SignalingClient",
    "WavTrack",
    "candidates_from_sdp",
    "frame_to_mono",
    "main",
    "run_call",
    "strip_candidates",
]

log = logging.getLogger(__name__)

#: Inbound packets whose arrival is remembered until their frame is decoded (2 s of audio).
MAX_ARRIVALS = 100
#: RTVI protocol spoken by pipecat 1.14; a different major version makes the bot report an error.
RTVI_VERSION = "2.2.0"
_POLL = 0.05


class PacketArrivals:
    """When the last :data:`MAX_ARRIVALS` inbound RTP packets arrived, by RTP timestamp.

    aiortc gives a decoded frame the pts of its packet counted from the first packet's RTP
    timestamp (wrapping at 2**32), so :meth:`of` finds a frame's packet from its pts.
    """

    def __init__(self) -> None:
        self._at: dict[int, float] = {}
        self._origin: int | None = None

    def note(self, timestamp: int, at: float) -> None:
        if self._origin is None:
            self._origin = timestamp
        self._at[timestamp] = at
        if len(self._at) > MAX_ARRIVALS:
            del self._at[next(iter(self._at))]

    def of(self, pts: int) -> float | None:
        if self._origin is None:
            return None
        return self._at.get((self._origin + pts) % (1 << 32))


@dataclass(frozen=True)
class CallOptions:
    """What to call, what to say, and when to hang up."""

    url: str  #: base URL of signaling, e.g. ``http://127.0.0.1:7860``
    wav: Path  #: the caller's speech, played once then followed by silence
    record: Path | None = None  #: write the bot's audio here (mono 48 kHz 16-bit WAV)
    body: Mapping[str, Any] = field(default_factory=dict)  #: ``POST /start`` ``body``
    headers: Mapping[str, str] = field(default_factory=dict)  #: e.g. Authorization
    max_seconds: float = 30.0  #: hang up after this long, reply or not
    reply_silence: float = 1.5  #: after the bot's reply, this much silence ends the call
    lead_silence: float = 0.0  #: silence sent before the WAV (e.g. to let a greeting finish)
    silence_dbfs: float = DEFAULT_SILENCE_DBFS  #: 20 ms frames at or below this are silence
    trickle: bool = False  #: send ICE candidates by PATCH instead of inside the offer
    http_timeout: float = 10.0
    session_wait: float = 10.0  #: how long to wait after hang-up for status to leave "active"


@dataclass(frozen=True)
class RtviMessage:
    """One JSON message from the bot's data channel, with its arrival instant."""

    at: float
    data: Mapping[str, Any]

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))


@dataclass(frozen=True, eq=False)
class CallResult:
    """What one call measured. Instants are monotonic seconds; durations are seconds.

    Every frame instant (``first_audio_at``, ``reply_at``) is the arrival of the frame's RTP
    packet, read from the receiver as it comes in: the caller keeps no jitter buffer
    (:class:`media.jitter.AudioJitterBuffer` without prefetch; aiortc's own would hold each
    packet until 4 more have come), and decoding, its thread hop and this process's event-loop
    lag are not counted.
    """

    session_id: str
    pc_id: str
    end_reason: str  #: "reply", "max_seconds", "peer_left", "failed" or "closed"
    start_s: float  #: ``POST /start`` round trip
    answer_s: float  #: offer ``POST`` round trip (offer → answer)
    connected_s: float | None  #: offer sent → peer connection "connected"
    played_at: float | None  #: first WAV sample (after lead silence) played
    speech_end_at: float | None  #: last loud WAV sample played (see :class:`WavTrack`)
    first_rtp_at: float | None  #: first RTP packet from the bot
    first_audio_at: float | None  #: first non-silent 20 ms frame from the bot
    #: first non-silent bot frame at or after ``speech_end_at``: the reply of a bot that waits
    #: for the end of the turn (for an echo it is just the tail of the echo)
    reply_at: float | None
    bot_audio: Samples  #: everything received, mono int16 48 kHz, in arrival order
    voiced_s: float  #: seconds of non-silent bot audio
    messages: tuple[RtviMessage, ...]
    session: Mapping[str, Any]  #: final ``GET /api/sessions/{id}``

    @property
    def first_audio_s(self) -> float | None:
        """Voice-to-voice: from the end of the caller's speech to the bot's first sound."""
        if self.reply_at is None or self.speech_end_at is None:
            return None
        return self.reply_at - self.speech_end_at

    @property
    def status(self) -> str:
        return str(self.session.get("status", ""))

    @property
    def transcript(self) -> list[dict[str, Any]]:
        lines = self.session.get("transcript") or []
        return [line for line in lines if isinstance(line, dict)]

    def to_json(self) -> dict[str, Any]:
        """The result without the audio, for ``--json`` and benchmark reports."""
        return {
            "session_id": self.session_id,
            "pc_id": self.pc_id,
            "end_reason": self.end_reason,
            "start_s": self.start_s,
            "answer_s": self.answer_s,
            "connected_s": self.connected_s,
            "first_audio_s": self.first_audio_s,
            "bot_audio_s": self.bot_audio.size / SAMPLE_RATE,
            "voiced_s": self.voiced_s,
            "messages": [{"at": m.at, "message": dict(m.data)} for m in self.messages],
            "session": dict(self.session),
        }


class Call:
    """One call, in pieces: :meth:`connect`, :meth:`wait`, :meth:`close`, :meth:`result`.

    The call owns its peer connection, its ping task and its recording task; :meth:`close`
    (safe twice) hangs up and ends them. The ``client`` belongs to whoever passed it.
    """

    def __init__(self, options: CallOptions, client: SignalingClient) -> None:
        self._options = options
        self._client = client
        samples = read_wav(options.wav, SAMPLE_RATE)
        self._speech_end = speech_end(samples, SAMPLE_RATE, options.silence_dbfs)
        self.track = WavTrack(samples, options.lead_silence)
        self.session_id = ""
        self.pc_id = ""
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._ping: asyncio.Task[None] | None = None
        self._recorder: asyncio.Task[None] | None = None
        self._closed = False
        self._end_reason = ""
        self._begun = 0.0
        self._start_s = self._answer_s = 0.0
        self._offer_at = 0.0
        self._connected_at: float | None = None
        self._first_rtp_at: float | None = None
        self._arrivals = PacketArrivals()
        self._first_audio_at: float | None = None
        self._reply_at: float | None = None
        self._last_voiced_at: float | None = None
        self._voiced = 0
        self._chunks: list[Samples] = []
        self._messages: list[RtviMessage] = []

    async def connect(self) -> None:
        """Start a session, negotiate, and begin sending, recording and pinging."""
        self._begun = time.monotonic()
        reply = await self._client.start(self._options.body)
        self._start_s = time.monotonic() - self._begun
        self.session_id = str(reply.get("sessionId") or "")
        if not self.session_id:
            raise CallError(0, "bad_reply", f"POST /start gave no sessionId: {reply!r}")
        servers = (reply.get("iceConfig") or {}).get("iceServers") or []
        ice = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in servers
            if isinstance(s, dict) and s.get("urls")
        ]
        # One transport for audio and data, as browsers end up with; pipecat's answer bundles.
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self._pc = pc
        pc.on("connectionstatechange", self._on_state)
        transceiver = pc.addTransceiver(self.track, direction="sendrecv")
        self._watch_rtp(transceiver.receiver)
        self._channel = channel = pc.createDataChannel("chat", ordered=True)
        channel.on("open", self._on_open)
        channel.on("message", self._on_message)
        # aiortc gathers every candidate inside setLocalDescription: the SDP is complete.
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        self._offer_at = time.monotonic()
        answer = await self._client.offer(
            self.session_id, strip_candidates(sdp) if self._options.trickle else sdp
        )
        self._answer_s = time.monotonic() - self._offer_at
        self.pc_id = str(answer.get("pc_id") or "")
        if not isinstance(answer.get("sdp"), str):
            raise CallError(0, "bad_reply", "the offer's reply has no sdp")
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=answer["sdp"], type=answer.get("type", "answer"))
        )
        tune_audio_receivers(pc, 0)
        if self._options.trickle:
            await self._client.patch_candidates(
                self.session_id, self.pc_id, candidates_from_sdp(sdp)
            )
        self._recorder = asyncio.create_task(self._record(transceiver.receiver.track))

    async def wait(self) -> str:
        """Until it is time to hang up; returns why."""
        deadline = self._begun + self._options.max_seconds
        while not self._end_reason:
            now = time.monotonic()
            if now >= deadline:
                return "max_seconds"
            if self._replied(now):
                return "reply"
            await asyncio.sleep(min(_POLL, deadline - now))
        return self._end_reason

    async def close(self) -> None:
        """Hang up: ``DELETE`` the session, then close the peer. Tolerant of errors."""
        if self._closed:
            return
        self._closed = True
        if self._ping is not None:
            self._ping.cancel()
            # asyncio.wait, unlike awaiting the task, never swallows a cancel of this task.
            await asyncio.wait({self._ping})
        if self.session_id:
            try:
                await self._client.hangup(self.session_id)
            except CallError as exc:
                log.debug("hang-up of %s: %s", self.session_id, exc)
        self.track.stop()
        if self._pc is not None:
            try:
                await self._pc.close()
            except Exception:  # a half-set-up peer may fail to stop; the call is over anyway
                log.debug("closing peer of %s", self.session_id, exc_info=True)
        if self._recorder is not None:
            # The closed receiver ends the track, which ends the task; cancel is a fallback.
            done, _ = await asyncio.wait({self._recorder}, timeout=1.0)
            if not done:
                self._recorder.cancel()
                await asyncio.wait({self._recorder})

    def result(self, end_reason: str, session: Mapping[str, Any]) -> CallResult:
        """What was measured, once the call is closed."""
        speech_end_at = None if self._speech_end is None else self.track.at(self._speech_end)
        return CallResult(
            session_id=self.session_id,
            pc_id=self.pc_id,
            end_reason=end_reason,
            start_s=self._start_s,
            answer_s=self._answer_s,
            connected_s=None if self._connected_at is None else self._connected_at - self._offer_at,
            played_at=self.track.at(0.0),
            speech_end_at=speech_end_at,
            first_rtp_at=self._first_rtp_at,
            first_audio_at=self._first_audio_at,
            reply_at=self._reply_at,
            bot_audio=np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16),
            voiced_s=self._voiced / SAMPLE_RATE,
            messages=tuple(self._messages),
            session=session,
        )

    def _replied(self, now: float) -> bool:
        return (
            self.track.done
            and self._reply_at is not None
            and self._last_voiced_at is not None
            and now - self._last_voiced_at >= self._options.reply_silence
        )

    def _watch_rtp(self, receiver: RTCRtpReceiver) -> None:
        async def arrived(packet: Any, _arrival_time_ms: int) -> None:
            now = time.monotonic()
            if self._first_rtp_at is None:
                self._first_rtp_at = now
            self._arrivals.note(packet.timestamp, now)

        aiortc_adapter.on_rtp_packet(receiver, arrived)

    def _arrival(self, frame: AudioFrame) -> float:
        """When the packet of a decoded ``frame`` arrived: the decoder thread's hand-over and
        this process's own event-loop lag come after, and are not the bot's."""
        arrived = None if frame.pts is None else self._arrivals.of(frame.pts)
        return time.monotonic() if arrived is None else arrived

    async def _record(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, AudioFrame)
            now = self._arrival(frame)
            samples = frame_to_mono(frame)
            if frame.sample_rate != SAMPLE_RATE:
                samples = resample(samples, frame.sample_rate, SAMPLE_RATE)
            self._chunks.append(samples)
            if is_silent(samples, self._options.silence_dbfs):
                continue
            self._voiced += samples.size
            self._last_voiced_at = now
            if self._first_audio_at is None:
                self._first_audio_at = now
            if self._reply_at is None and self._speech_end is not None:
                end_at = self.track.at(self._speech_end)
                if end_at is not None and now >= end_at:
                    self._reply_at = now

    def _on_state(self) -> None:
        state = self._pc.connectionState if self._pc is not None else "closed"
        if state == "connected" and self._connected_at is None:
            self._connected_at = time.monotonic()
        elif state in ("failed", "closed") and not self._end_reason:
            self._end_reason = state

    def _on_open(self) -> None:
        channel = self._channel
        if channel is None or self._closed:
            return
        # What the JS transport sends once its channel opens: the mic's state, then
        # client-ready (which also starts the bot's audio input if it gates on it).
        track_status = {"type": "trackStatus", "receiver_index": 0, "enabled": True}
        channel.send(json.dumps({"type": "signalling", "message": track_status}))
        about = {"library": "voicebots-caller", "library_version": "0.1.0", "platform": "python"}
        ready = {"version": RTVI_VERSION, "about": about}
        channel.send(
            json.dumps(
                {
                    "id": uuid.uuid4().hex[:8],
                    "label": "rtvi-ai",
                    "type": "client-ready",
                    "data": ready,
                }
            )
        )
        self._ping = asyncio.create_task(self._pinger(channel))

    async def _pinger(self, channel: RTCDataChannel) -> None:
        # pipecat treats a client that pinged once and then stopped for 3 s as disconnected.
        while channel.readyState == "open":
            channel.send(f"ping: {int(time.time() * 1000)}")
            await asyncio.sleep(1.0)

    def _on_message(self, message: str | bytes) -> None:
        at = time.monotonic()
        try:
            data = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(data, dict):
            return
        self._messages.append(RtviMessage(at=at, data=data))
        inner = data.get("message")
        if data.get("type") == "signalling" and isinstance(inner, dict):
            if inner.get("type") == "peerLeft" and not self._end_reason:
                self._end_reason = "peer_left"


async def run_call(options: CallOptions) -> CallResult:
    """Make one call from start to hang-up and return what it measured.

    Raises :class:`CallError` when signaling refuses or cannot be reached; once a session
    exists it is always hung up, whatever happens.
    """
    async with SignalingClient(
        options.url, headers=options.headers, timeout=options.http_timeout
    ) as client:
        call = Call(options, client)
        try:
            await call.connect()
            reason = await call.wait()
        finally:
            await call.close()
        session = await client.wait_ended(call.session_id, options.session_wait)
    result = call.result(reason, session)
    if options.record is not None:
        write_wav(options.record, result.bot_audio, SAMPLE_RATE)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``voicebots call URL --wav FILE [--record OUT.wav] [--max-seconds N] [--json]``.

    ``argv`` are the arguments after ``voicebots call`` (a leading ``call`` is skipped too).
    Returns the process exit code.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["call"]:
        args = args[1:]
    parser = argparse.ArgumentParser(
        prog="voicebots call",
        description="Call a voicebots server, speaking a WAV; print the transcript.",
    )
    parser.add_argument("url", help="signaling base URL, e.g. http://127.0.0.1:7860")
    parser.add_argument("--wav", type=Path, required=True, help="what the caller says")
    parser.add_argument("--record", type=Path, help="write the bot's audio to this WAV")
    parser.add_argument("--max-seconds", type=float, default=CallOptions.max_seconds)
    parser.add_argument("--reply-silence", type=float, default=CallOptions.reply_silence)
    parser.add_argument("--lead-silence", type=float, default=CallOptions.lead_silence)
    parser.add_argument("--body", type=json.loads, default={}, help="JSON for POST /start body")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    ns = parser.parse_args(args)
    headers = {n.strip(): v.strip() for n, _, v in (h.partition(":") for h in ns.header) if v}
    options = CallOptions(
        url=ns.url,
        wav=ns.wav,
        record=ns.record,
        body=ns.body,
        headers=headers,
        max_seconds=ns.max_seconds,
        reply_silence=ns.reply_silence,
        lead_silence=ns.lead_silence,
    )
    try:
        result = asyncio.run(run_call(options))
    except CallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # unreadable WAV, unwritable record
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if ns.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    for line in result.transcript:
        print(f"{line.get('role', '?')}: {line.get('text', '')}")
    first = result.first_audio_s
    print(
        f"-- session {result.session_id} {result.status or 'unknown'} ({result.end_reason}); "
        f"answer {result.answer_s * 1000:.0f} ms; bot audio {result.voiced_s:.2f} s"
        + ("" if first is None else f"; first audio {first * 1000:.0f} ms after speech")
    )
    return 0
