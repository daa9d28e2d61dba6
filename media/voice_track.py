"""The bot's voice on the wire: 20 ms Opus packets, encoded on the event loop, sent on time.

pipecat's output track hands aiortc 10 ms of PCM per ``recv``, paced on a fixed 10 ms grid,
and aiortc encodes each one in a worker thread after resampling it to 48 kHz stereo. The first
packet of a reply therefore waits for the next grid tick, then for a second 10 ms frame (an
Opus packet holds 20 ms), and crosses to the encoder thread and back twice: a delay at the
start of every reply, and two thread hops for every 10 ms of the call.

:class:`VoiceTrack` encodes each 20 ms frame itself, mono at the pipeline's own rate (24 kHz is
one of Opus's native rates: nothing to resample), and hands aiortc the finished packet, which
aiortc only packetizes (no thread). It sends silence between replies, as pipecat's track does,
so the stream never pauses; when audio arrives while the track waits to send a silent frame,
the audio goes out at once instead: the start of each reply leads the 20 ms grid by up to one
frame, and the next silent frame waits that lead out, so RTP time never drifts from real time.

``add_audio_bytes`` keeps the contract of pipecat's track: it returns a future that completes
when the audio has been sent, which is what paces pipecat's output transport, so at most one
chunk is queued here and an interruption stops the voice within a frame. The bot's connection
(:class:`bots.connection.VoiceConnection`) puts this track in the place of pipecat's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from fractions import Fraction
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.packet import Packet

from media.opus import MonoOpusEncoder

__all__ = ["FRAME_SECONDS", "RTP_RATE", "VoiceTrack"]

FRAME_SECONDS = 0.02
#: Opus's RTP clock, whatever the rate it encodes at.
RTP_RATE = 48000
#: Mono speech at 24 kHz: aiortc sends 96 kbit/s, for stereo music.
BIT_RATE = 48000


class VoiceTrack(MediaStreamTrack):
    """An audio track fed PCM (mono int16 at ``sample_rate``) that yields Opus packets."""

    kind = "audio"

    def __init__(self, sample_rate: int, bit_rate: int = BIT_RATE) -> None:
        super().__init__()
        if RTP_RATE % sample_rate:
            raise ValueError(f"Opus cannot encode at {sample_rate} Hz")
        self._rate = sample_rate
        self._frame_samples = round(sample_rate * FRAME_SECONDS)
        self._frame_bytes = self._frame_samples * 2
        self._chunk_bytes = self._frame_bytes // 2  # pipecat writes whole 10 ms chunks
        self._encoder = MonoOpusEncoder(sample_rate, bit_rate)
        self._pending = bytearray()
        self._taken = 0  #: bytes taken from the queue since the start
        self._queued = 0  #: bytes added since the start
        self._done: deque[tuple[int, asyncio.Future[bool]]] = deque()
        self._frames = 0
        self._start: float | None = None
        self._lead = 0.0  #: how far the reply being sent runs ahead of the grid (s)
        self._idle: asyncio.Future[None] | None = None  #: waiting to send silence
        self._packets: deque[Any] = deque()

    def add_audio_bytes(self, audio: bytes) -> asyncio.Future[bool]:
        """Queue ``audio``; the future completes when its last sample has been sent."""
        if len(audio) % self._chunk_bytes:
            raise ValueError("audio must be whole 10 ms chunks")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending += audio
        self._queued += len(audio)
        self._done.append((self._queued, future))
        self._wake()
        return future

    def stop(self) -> None:
        super().stop()
        self._wake()

    async def recv(self) -> Packet:
        while not self._packets:
            await self._next_slot()
            self._encode(self._next_frame())
        return self._packets.popleft()

    async def _next_slot(self) -> None:
        """Wait until the next frame is due; audio arriving meanwhile is due at once."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
            return
        due = self._start + self._frames * FRAME_SECONDS
        idle = not self._pending
        if not idle:
            due -= self._lead
        if due <= now:
            return
        waiter = loop.create_future()
        if idle:
            self._idle = waiter  # add_audio_bytes ends the wait
        timer = loop.call_at(due, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._idle = None
        if self.readyState != "live":
            raise MediaStreamError
        if idle and self._pending:
            self._lead = max(0.0, due - loop.time())

    def _wake(self) -> None:
        if self._idle is not None:
            _resolve(self._idle)

    def _next_frame(self) -> bytes:
        if not self._pending:
            self._lead = 0.0  # a silent frame: back on the grid
            return bytes(self._frame_bytes)
        frame = bytes(self._pending[: self._frame_bytes])
        del self._pending[: self._frame_bytes]
        self._taken += len(frame)
        while self._done and self._done[0][0] <= self._taken:
            future = self._done.popleft()[1]
            if not future.done():
                future.set_result(True)
        return frame.ljust(self._frame_bytes, b"\0")

    def _encode(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, np.int16)
        for packet in self._encoder.encode(samples, self._frames * self._frame_samples):
            packet.pts = self._frames * round(RTP_RATE * FRAME_SECONDS)
            packet.time_base = Fraction(1, RTP_RATE)
            self._packets.append(packet)
        self._frames += 1


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
