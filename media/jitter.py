"""How long inbound audio waits in the bot's jitter buffer before the pipeline hears it.

aiortc's receiver buffer is built for video, where a frame spans several packets: it knows a
frame is complete only when a packet of the *next* frame arrives, and it then waits for
``prefetch`` more (4 by default). For Opus every packet is a whole 20 ms frame, so each one
reached VAD and STT one frame late even at the smallest prefetch, and four frames late at
aiortc's default — a delay inside every reply of a voice agent.

:class:`AudioJitterBuffer` treats each packet as a complete frame and releases the oldest as
soon as ``prefetch`` newer packets are held behind it: at 0, on arrival. A missing packet is
waited for while ``LOSS_PATIENCE`` more arrive, then given up as lost (aiortc waits until its
16-packet buffer overflows, and keeps the backlog that leaves). One frame leaves per packet
that arrives, so a late packet leaves a frame of delay behind it; the delay is kept to
``prefetch + LOSS_PATIENCE`` frames by dropping the oldest.

It keeps the contract aiortc's receiver has with its buffer — ``add(packet)`` returns
``(picture loss, complete frame or None)`` — and reads only the packet's public fields. aiortc
has no setting for its receiver's buffer: :func:`tune_audio_receivers` puts this one in
through :mod:`media.aiortc_adapter`.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterFrame
from loguru import logger

from media import aiortc_adapter

__all__ = ["AUDIO_CAPACITY", "LOSS_PATIENCE", "AudioJitterBuffer", "tune_audio_receivers"]

#: Packets an audio jitter buffer holds (aiortc's own value; a power of two, so slots stay
#: aligned when 16-bit sequence numbers wrap).
AUDIO_CAPACITY = 16
#: Packets that may arrive after a missing one before it is given up as lost (20 ms each).
LOSS_PATIENCE = 2
#: A packet this far behind the oldest one held is a new stream (the sender restarted), not a
#: late packet of this one.
MAX_MISORDER = 100

_SEQUENCE_SPAN = 1 << 16


class AudioJitterBuffer:
    """A jitter buffer for audio: one RTP packet per frame, released after ``prefetch``."""

    def __init__(self, prefetch: int, capacity: int = AUDIO_CAPACITY) -> None:
        if capacity <= 0 or capacity & (capacity - 1):
            raise ValueError("the capacity must be a power of two")
        self.prefetch = prefetch
        self.capacity = capacity
        #: The sequence number of the oldest slot; ``None`` until the first packet.
        self._oldest: int | None = None
        self._slots: list[Any] = [None] * capacity

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        """Take ``packet``; returns ``(False, the frame released, if any)``. (The first item
        is a picture loss indication, which audio never asks for.)"""
        number = packet.sequence_number
        if self._oldest is None:
            self._oldest = number
        ahead = (number - self._oldest) % _SEQUENCE_SPAN
        behind = (self._oldest - number) % _SEQUENCE_SPAN
        if behind < ahead:  # older than the oldest slot
            if behind < MAX_MISORDER:
                return False, None  # given up as lost already: too late to play
            self._drop(self.capacity)
            self._oldest, ahead = number, 0
        if ahead >= self.capacity:  # no slot for it yet: the oldest make room
            excess = ahead - self.capacity + 1
            self._drop(min(excess, self.capacity))
            if excess >= self.capacity:  # far ahead of all that was held: start over at it
                self._oldest = number
        self._slots[number % self.capacity] = packet
        return False, self._release()

    def _slot(self, offset: int) -> Any:
        assert self._oldest is not None
        return self._slots[(self._oldest + offset) % self.capacity]

    def _release(self) -> JitterFrame | None:
        held = 0  # packets in sequence from the oldest slot on (usually one, or none)
        while held < self.capacity and self._slot(held) is not None:
            held += 1
        keep = self.prefetch + LOSS_PATIENCE
        if held > self.prefetch:
            # Behind by more than the buffer's own delay (after a late packet): catch up.
            index = max(0, held - 1 - keep)
        else:
            present = [*range(held)]
            present += [i for i in range(held + 1, self.capacity) if self._slot(i) is not None]
            if len(present) <= keep:
                return None  # still prefetching, or still waiting for a missing packet
            # Missing packets before the one released are lost; drop to catch up as above.
            index = present[max(0, len(present) - 1 - keep)]
        packet = self._slot(index)
        self._drop(index + 1)
        # For audio codecs the RTP payload is the encoded frame itself.
        return JitterFrame(data=packet.payload, timestamp=packet.timestamp)

    def _drop(self, count: int) -> None:
        """Empty the ``count`` oldest slots (at most all of them)."""
        assert self._oldest is not None
        for _ in range(count):
            self._slots[self._oldest % self.capacity] = None
            self._oldest = (self._oldest + 1) % _SEQUENCE_SPAN


def tune_audio_receivers(pc: Any, prefetch: int) -> int:
    """Give every audio receiver of ``pc`` a buffer releasing after ``prefetch`` frames.

    Call after each remote description is set; receivers already tuned keep their buffer
    (and the frames in it). Returns how many receivers were tuned now.
    """
    tuned = 0
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "audio" or receiver is None:
            continue
        current = aiortc_adapter.receiver_jitter_buffer(receiver)
        if isinstance(current, AudioJitterBuffer) and current.prefetch == prefetch:
            continue
        if current is None:
            logger.warning("this aiortc receiver has no jitter buffer to replace; kept its own")
            continue
        aiortc_adapter.set_receiver_jitter_buffer(receiver, AudioJitterBuffer(prefetch))
        tuned += 1
    return tuned
