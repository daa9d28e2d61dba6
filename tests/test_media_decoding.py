"""Received audio is decoded on the event loop, over a real connection, and the track still
ends when the connection does."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from media.audio import is_silent
from media.decoding import InlineAudioDecoder, decode_audio_inline
from media.tracks import WavTrack, frame_to_mono


def _tone(seconds: float) -> np.ndarray:
    n = round(seconds * 48000)
    return (np.sin(np.arange(n) * 2 * np.pi * 440 / 48000) * 8000).astype(np.int16)


def _receiver_queue(pc: RTCPeerConnection) -> object:
    (transceiver,) = pc.getTransceivers()
    return getattr(transceiver.receiver, "_RTCRtpReceiver__decoder_queue")  # noqa: B009


async def test_audio_is_decoded_on_the_loop_and_the_track_ends_with_the_connection() -> None:
    caller, bot = RTCPeerConnection(), RTCPeerConnection()
    try:
        caller.addTransceiver(WavTrack(_tone(1.0)), direction="sendrecv")
        await caller.setLocalDescription(await caller.createOffer())
        await bot.setRemoteDescription(caller.localDescription)
        assert decode_audio_inline(bot) == 1
        assert decode_audio_inline(bot) == 0  # a renegotiation keeps the decoder
        decoder = _receiver_queue(bot)
        assert isinstance(decoder, InlineAudioDecoder)
        await bot.setLocalDescription(await bot.createAnswer())
        await caller.setRemoteDescription(bot.localDescription)

        (transceiver,) = bot.getTransceivers()
        track = transceiver.receiver.track
        loud = 0
        async with asyncio.timeout(10):
            while loud < 10:
                frame = await track.recv()
                assert isinstance(frame, AudioFrame)
                if not is_silent(frame_to_mono(frame), -40.0):
                    loud += 1
        assert decoder.failures == 0
        # aiortc's thread was started, and waits for the end without decoding anything.
        assert "audio-decoder" in {t.name for t in threading.enumerate()}
        # The caller receives nothing (the bot has no audio to send): nothing to change.
        assert decode_audio_inline(caller) == 0
    finally:
        await caller.close()
        await bot.close()
    with pytest.raises(MediaStreamError):
        async with asyncio.timeout(5):
            while True:
                await track.recv()
    assert not any(t.name == "audio-decoder" for t in threading.enumerate())
