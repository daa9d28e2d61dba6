"""The bot's audio jitter buffer: one packet per frame, loss given up in bounded time, and
installed on aiortc's real receivers, once, audio only."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from bots.config import BotConfig
from media.aiortc_adapter import receiver_jitter_buffer
from media.jitter import LOSS_PATIENCE, AudioJitterBuffer, tune_audio_receivers


def _buffer(pc: RTCPeerConnection, kind: str) -> Any:
    (transceiver,) = [t for t in pc.getTransceivers() if t.kind == kind]
    return receiver_jitter_buffer(transceiver.receiver)


async def test_audio_receivers_get_the_configured_prefetch() -> None:
    caller, bot = RTCPeerConnection(), RTCPeerConnection()
    try:
        caller.addTransceiver("audio", direction="sendrecv")
        caller.addTransceiver("video", direction="sendrecv")
        await caller.setLocalDescription(await caller.createOffer())
        await bot.setRemoteDescription(caller.localDescription)
        video = _buffer(bot, "video")
        assert isinstance(video, JitterBuffer)

        assert tune_audio_receivers(bot, 1) == 1
        audio = _buffer(bot, "audio")
        assert isinstance(audio, AudioJitterBuffer)
        assert (audio.prefetch, audio.capacity) == (1, 16)
        assert _buffer(bot, "video") is video  # video keeps aiortc's own
        # A renegotiation tunes again; a receiver already tuned keeps its buffer and frames.
        assert tune_audio_receivers(bot, 1) == 0
        assert _buffer(bot, "audio") is audio
    finally:
        await caller.close()
        await bot.close()


def _feed(buffer: JitterBuffer | AudioJitterBuffer, sequence: list[int]) -> list[int | None]:
    """Adds packets in the given order; returns, per packet added, the frame released."""
    released: list[int | None] = []
    for n in sequence:
        payload = n.to_bytes(4, "big")
        packet = RtpPacket(111, sequence_number=n % 65536, timestamp=n * 960, payload=payload)
        packet._data = payload  # type: ignore[attr-defined] # as aiortc's receiver sets it
        _pli, frame = buffer.add(packet)
        released.append(None if frame is None else int.from_bytes(frame.data, "big"))
    return released


@pytest.mark.parametrize("prefetch", [0, 1, 2])
def test_each_packet_is_a_frame_released_after_prefetch_more(prefetch: int) -> None:
    released = _feed(AudioJitterBuffer(prefetch), list(range(100, 110)))
    # Packet n leaves when n + prefetch arrives; aiortc's own buffer cannot go below 1.
    assert released == [None] * prefetch + list(range(100, 110 - prefetch))
    held = max(1, prefetch)
    aiortc = _feed(JitterBuffer(capacity=16, prefetch=prefetch), list(range(100, 110)))
    assert aiortc == [None] * held + list(range(100, 110 - held))


def test_a_packet_arriving_late_is_still_played_in_order() -> None:
    assert _feed(AudioJitterBuffer(0), [1, 2, 4, 3, 5, 6]) == [1, 2, None, 3, 4, 5]


@pytest.mark.parametrize("prefetch", [0, 1])
def test_a_lost_packet_is_given_up_after_loss_patience_more(prefetch: int) -> None:
    sequence = [1, 2, *range(4, 14)]  # 3 never arrives
    released = _feed(AudioJitterBuffer(prefetch), sequence)
    assert released[:2] == ([None] * prefetch + [1, 2])[:2]
    # Waiting for 3 while LOSS_PATIENCE more arrive, then 3 is lost and play goes on, in
    # order, never more than prefetch + LOSS_PATIENCE frames behind.
    assert released[2 : 2 + LOSS_PATIENCE] == [None] * LOSS_PATIENCE
    played = [n for n in released if n is not None]
    assert played[:2] == [1, 2] and 3 not in played and played == sorted(played)
    assert played[-1] >= sequence[-1] - prefetch - LOSS_PATIENCE
    # aiortc's own buffer waits for its 16 slots to overflow.
    assert _feed(JitterBuffer(capacity=16, prefetch=1), sequence)[2:] == [None] * 10


def test_a_packet_older_than_one_given_up_is_not_played() -> None:
    # 3 is given up once LOSS_PATIENCE more have come; arriving after that, it is dropped.
    assert _feed(AudioJitterBuffer(0), [1, 2, 4, 5, 6, 3, 7]) == [1, 2, None, None, 4, None, 5]


def test_a_jump_past_the_buffer_plays_on_from_the_new_packet() -> None:
    assert _feed(AudioJitterBuffer(0), [1, 2, 100, 101]) == [1, 2, 100, 101]


def test_a_restarted_stream_plays_from_its_new_numbers() -> None:
    assert _feed(AudioJitterBuffer(0), [5000, 5001, 10, 11]) == [5000, 5001, 10, 11]


def test_sequence_numbers_wrap() -> None:
    # (The payload carries the unwrapped number.)
    assert _feed(AudioJitterBuffer(0), [65534, 65535, 65536, 65537]) == [
        65534,
        65535,
        65536,
        65537,
    ]


def test_the_bots_buffer_hands_packets_on_as_they_arrive() -> None:
    assert BotConfig.from_env({}).jitter_frames == 0
    assert BotConfig(jitter_frames=3).jitter_frames == 3
    for bad in (-1, 9):
        with pytest.raises(ValueError, match="jitter_frames must be within 0-8"):
            BotConfig(jitter_frames=bad)
