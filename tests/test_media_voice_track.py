"""The bot's voice track: Opus packets on a 20 ms RTP grid, a reply sent without waiting for
the grid, pipecat's write contract kept, and the track installed in place of pipecat's on a
real peer connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from pipecat.transports.smallwebrtc.transport import RawAudioTrack

from bots.connection import VoiceConnection
from media.audio import is_silent
from media.opus import SILENCE_SETTLE_FRAMES, MonoOpusEncoder
from media.tracks import frame_to_mono
from media.voice_track import VoiceTrack

RATE = 24000
RTP_STEP = 960  # 20 ms on Opus's 48 kHz RTP clock


def _tone(seconds: float, rate: int = RATE) -> bytes:
    n = round(seconds * rate)
    wave = np.sin(np.arange(n) * 2 * np.pi * 440 / rate) * 8000
    return wave.astype(np.int16).tobytes()


def _decoded(decoder: OpusDecoder, packet: Any) -> np.ndarray:
    frames = decoder.decode(JitterFrame(data=bytes(packet), timestamp=packet.pts))
    return np.concatenate([frame_to_mono(f) for f in frames if isinstance(f, AudioFrame)])


async def test_audio_goes_out_as_20_ms_opus_packets_on_a_continuous_clock() -> None:
    track, decoder = VoiceTrack(RATE), OpusDecoder()
    sent = track.add_audio_bytes(_tone(0.2))
    packets = []
    for _ in range(10):
        assert not sent.done()
        packets.append(await track.recv())
    assert sent.done() and sent.result() is True  # completes with the last frame of it
    packets += [await track.recv() for _ in range(3)]  # then silence
    track.stop()

    assert [p.pts for p in packets] == [i * RTP_STEP for i in range(13)]
    assert {p.time_base.denominator for p in packets} == {48000}
    audio = [_decoded(decoder, p) for p in packets]
    assert all(a.size == RTP_STEP for a in audio)  # 20 ms, decoded at 48 kHz
    assert not any(is_silent(a, -40.0) for a in audio[1:10])
    assert all(is_silent(a, -40.0) for a in audio[-2:])


async def test_writes_must_be_whole_10_ms_chunks_and_a_half_frame_is_padded() -> None:
    track = VoiceTrack(RATE)
    with pytest.raises(ValueError, match="10 ms"):
        track.add_audio_bytes(bytes(240))  # 5 ms
    sent = track.add_audio_bytes(_tone(0.01))  # half a frame: padded with silence
    packet = await track.recv()
    assert sent.done() and packet.pts == 0
    assert (await track.recv()).pts == RTP_STEP
    track.stop()


async def test_stop_ends_a_waiting_recv() -> None:
    track = VoiceTrack(RATE)
    await track.recv()
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await waiting
    with pytest.raises(MediaStreamError):
        await track.recv()


class _SlowClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock runs 50 times slower: the 20 ms grid becomes a second."""

    def time(self) -> float:
        return super().time() / 50


def _on_slow_clock(test: Callable[[], Awaitable[None]]) -> None:
    loop = _SlowClockLoop()
    try:
        loop.run_until_complete(test())
    finally:
        loop.close()


def test_a_reply_goes_out_at_once_and_the_silence_after_it_waits_the_lead_out() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        track, decoder = VoiceTrack(RATE), OpusDecoder()
        first = await track.recv()  # silence; the grid starts now
        start = loop.time()
        waiting = asyncio.ensure_future(track.recv())  # the next silent frame is 20 ms away
        await asyncio.sleep(0.001)
        sent = track.add_audio_bytes(_tone(0.04))
        reply = await waiting
        replied = loop.time() - start
        assert replied < 0.015  # not held for the grid's slot at 0.020
        second = await track.recv()  # the reply's second frame, a frame after its first
        assert sent.done()
        silence = await track.recv()
        back_on_grid = loop.time() - start
        track.stop()

        assert [p.pts for p in (first, reply, second, silence)] == [0, 960, 1920, 2880]
        assert not is_silent(_decoded(decoder, reply)[-RTP_STEP // 2 :], -40.0)
        assert back_on_grid >= 0.059  # the silent frame keeps its own slot: RTP time = real time

    _on_slow_clock(scenario)


async def test_pipecat_track_is_replaced_on_a_real_connection() -> None:
    caller = RTCPeerConnection()
    bot = VoiceConnection()
    try:
        caller.addTransceiver("audio", direction="sendrecv")
        heard: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        @caller.on("track")
        def _track(track: Any) -> None:
            if not heard.done():
                heard.set_result(track)

        await caller.setLocalDescription(await caller.createOffer())
        offer = caller.localDescription
        await bot.initialize(sdp=offer.sdp, type=offer.type)
        answer = bot.get_answer()
        assert answer is not None
        await caller.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

        pipecat_track = RawAudioTrack(sample_rate=RATE)
        bot.replace_audio_track(pipecat_track)
        (transceiver,) = bot.pc.getTransceivers()
        voice = transceiver.sender.track
        assert isinstance(voice, VoiceTrack)

        remote = await asyncio.wait_for(heard, 10)
        sent = pipecat_track.add_audio_bytes(_tone(0.3))  # what pipecat's output transport does
        loud = 0
        async with asyncio.timeout(10):
            while loud < 10:
                frame = await remote.recv()
                if isinstance(frame, AudioFrame) and not is_silent(frame_to_mono(frame), -40.0):
                    loud += 1
        await asyncio.wait_for(sent, 5)
    finally:
        await caller.close()
        await bot.disconnect()


def _frames(pcm: bytes, rate: int = RATE) -> list[np.ndarray]:
    samples = np.frombuffer(pcm, np.int16)
    step = round(rate * 0.02)
    return [samples[i : i + step] for i in range(0, samples.size, step)]


def _decode_all(packets: list[Any]) -> np.ndarray:
    decoder = OpusDecoder()
    return np.concatenate([_decoded(decoder, p) for p in packets]).astype(np.float64)


def test_settled_silence_is_the_encoders_own_packet_sent_again() -> None:
    silence = [np.zeros(480, np.int16)] * (SILENCE_SETTLE_FRAMES + 20)
    frames = _frames(_tone(0.4)) + silence + _frames(_tone(0.4)) + silence[:10]
    spared, reference = MonoOpusEncoder(RATE, 48000), MonoOpusEncoder(RATE, 48000)
    ours, theirs, settled_at = [], [], None
    for i, frame in enumerate(frames):
        ours += spared.encode(frame, i * 480)
        theirs += reference._encode(frame, i * 480)  # every frame through libopus
        if settled_at is None and spared.settled:
            settled_at = i
    assert settled_at is not None and 20 + SILENCE_SETTLE_FRAMES <= settled_at < 20 + 45
    assert len(ours) == len(theirs)
    resumed = 20 + len(silence)  # the second tone's first frame
    # Up to the second tone, byte for byte what libopus makes, pts included.
    assert [bytes(p) for p in ours[:resumed]] == [bytes(p) for p in theirs[:resumed]]
    assert [p.pts for p in ours] == [p.pts for p in theirs]
    # After it, other bits from the rate control, the same sound.
    a, b = _decode_all(ours), _decode_all(theirs)
    tone = slice((resumed + 3) * RTP_STEP, (resumed + 18) * RTP_STEP)
    signal = np.sqrt(np.mean(b[tone] ** 2))
    difference = np.sqrt(np.mean((a[tone] - b[tone]) ** 2))
    assert signal > 3000 and 20 * np.log10(signal / difference) > 30
    assert not a[(settled_at + 2) * RTP_STEP : resumed * RTP_STEP].any()


async def test_a_reply_after_settled_silence_goes_out_at_once_and_sounds() -> None:
    track, decoder = VoiceTrack(RATE), OpusDecoder()
    track.add_audio_bytes(_tone(0.1))
    packets = [await track.recv() for _ in range(SILENCE_SETTLE_FRAMES + 12)]
    assert len({bytes(p) for p in packets[-5:]}) == 1  # the settled silence
    sent = track.add_audio_bytes(_tone(0.1))
    packets += [await track.recv() for _ in range(6)]
    track.stop()

    assert sent.done()
    assert [p.pts for p in packets] == [i * RTP_STEP for i in range(len(packets))]
    audio = [_decoded(decoder, p) for p in packets]
    assert all(is_silent(a, -60.0) for a in audio[-12:-6])
    assert not any(is_silent(a, -40.0) for a in audio[-5:-1])
