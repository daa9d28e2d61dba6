"""The bot's audio jitter buffer: tuned on aiortc's real receivers, once, audio only."""

from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer

from media.jitter import tune_audio_receivers


def _buffer(pc: RTCPeerConnection, kind: str) -> JitterBuffer:
    (transceiver,) = [t for t in pc.getTransceivers() if t.kind == kind]
    buffer = getattr(transceiver.receiver, "_RTCRtpReceiver__jitter_buffer")  # noqa: B009
    assert isinstance(buffer, JitterBuffer)
    return buffer


async def test_audio_receivers_get_the_configured_prefetch() -> None:
    caller, bot = RTCPeerConnection(), RTCPeerConnection()
    try:
        caller.addTransceiver("audio", direction="sendrecv")
        caller.addTransceiver("video", direction="sendrecv")
        await caller.setLocalDescription(await caller.createOffer())
        await bot.setRemoteDescription(caller.localDescription)
        video = _buffer(bot, "video")

        assert tune_audio_receivers(bot, 1) == 1
        audio = _buffer(bot, "audio")
        assert (audio._prefetch, audio.capacity) == (1, 16)
        assert _buffer(bot, "video") is video  # video keeps aiortc's own
        # A renegotiation tunes again; a receiver already tuned keeps its buffer and frames.
        assert tune_audio_receivers(bot, 1) == 0
        assert _buffer(bot, "audio") is audio
    finally:
        await caller.close()
        await bot.close()
