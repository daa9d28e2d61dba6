"""How long inbound audio waits in the bot's jitter buffer before the pipeline hears it.

aiortc's receiver buffer is built for video, where a frame spans several packets: it knows a
frame is complete only when a packet of the *next* frame arrives, and it then waits for
``prefetch`` more (4 by default). For Opus every packet is a whole 20 ms frame, so each one
reached VAD and STT 20 ms after it arrived even at the smallest prefetch, and 80 ms at
aiortc's default — a delay inside every reply of a voice agent.

:class:`AudioJitterBuffer` treats each packet as a complete frame and releases the oldest as
soon as ``prefetch`` newer packets are held behind it: at 0, on arrival. A missing packet is
waited for while ``LOSS_PATIENCE`` more arrive, then given up as lost (aiortc waits until its
16-packet buffer overflows, and keeps the 300 ms backlog that leaves). One frame leaves per
packet that arrives, so a late packet leaves a frame of delay behind it; the delay is kept
to ``prefetch + LOSS_PATIENCE`` frames by dropping the oldest.

aiortc has no public setting for this; the receiver's buffer is a private attribute, the
same one pipecat resizes for video. :func:`tune_audio_receivers` says when it cannot.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from loguru import logger

__all__ = ["AUDIO_CAPACITY", "LOSS_PATIENCE", "AudioJitterBuffer", "tune_audio_receivers"]

#: Packets an audio jitter buffer holds (aiortc's own value; a power of two).
AUDIO_CAPACITY = 16
#: Packets that may arrive after a missing one before it is given up as lost (20 ms each).
LOSS_PATIENCE = 2
_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


class AudioJitterBuffer(JitterBuffer):
    """aiortc's buffer (ordering, capacity, overflow) with one packet per frame."""

    def __init__(self, prefetch: int) -> None:
        super().__init__(capacity=AUDIO_CAPACITY, prefetch=prefetch)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        origin, capacity, packets = self._origin, self.capacity, self._packets
        if origin is None:
            return None
        held = 0  # packets in sequence from the oldest slot on (usually one, or none)
        while held < capacity and packets[(origin + held) % capacity] is not None:
            held += 1
        if held > self._prefetch:
            # Behind by more than the buffer's own delay (after a late packet): catch up.
            index = max(0, held - 1 - self._prefetch - LOSS_PATIENCE)
        else:
            present = [*range(held)]
            present += [i for i in range(held + 1, capacity) if packets[(origin + i) % capacity]]
            if len(present) <= self._prefetch + LOSS_PATIENCE:
                return None  # still prefetching, or still waiting for a missing packet
            # Missing packets before the one released are lost; drop to catch up as above.
            index = present[max(0, len(present) - 1 - self._prefetch - LOSS_PATIENCE)]
        packet = packets[(origin + index) % capacity]
        assert packet is not None
        self.remove(index + 1)
        return JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


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
        current = getattr(receiver, _ATTRIBUTE, None)
        if not isinstance(current, JitterBuffer):
            logger.warning("this aiortc has no receiver jitter buffer to tune; kept its own")
            continue
        if isinstance(current, AudioJitterBuffer) and current._prefetch == prefetch:
            continue
        setattr(receiver, _ATTRIBUTE, AudioJitterBuffer(prefetch))
        tuned += 1
    return tuned
