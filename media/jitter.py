"""How long inbound audio waits in aiortc's jitter buffer before the pipeline hears it.

aiortc releases an audio frame only once ``prefetch`` later frames have arrived: 4 by
default, so every 20 ms Opus frame reaches VAD and STT 80 ms after it was received. For a
voice agent that delay sits inside every reply. voicebots sets the prefetch per call (fewer
frames: less delay, less tolerance for packets arriving out of order).

aiortc has no public setting for this; the receiver's buffer is a private attribute, the
same one pipecat resizes for video. :func:`tune_audio_receivers` says when it cannot.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer
from loguru import logger

__all__ = ["AUDIO_CAPACITY", "tune_audio_receivers"]

#: Packets an audio jitter buffer holds (aiortc's own value; a power of two).
AUDIO_CAPACITY = 16
_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


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
        if getattr(current, "_prefetch", None) == prefetch:
            continue
        setattr(receiver, _ATTRIBUTE, JitterBuffer(capacity=AUDIO_CAPACITY, prefetch=prefetch))
        tuned += 1
    return tuned
