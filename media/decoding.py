"""Received audio decoded on the event loop, as each packet completes a frame.

aiortc decodes what a receiver gets in a thread of its own: every 20 ms Opus packet is queued
to the thread, decoded (~0.05 ms), and handed back with ``run_coroutine_threadsafe``, which
wakes the loop through its self-pipe and makes a task just to put the frame in the track's
queue. Two thread switches and a task, 50 times a second per call, for a decode that costs
less than the hand-off — in every bot and every benchmark caller.

:class:`InlineAudioDecoder` takes the place of the receiver's queue to that thread: a frame
put in it is decoded there and then, and goes straight into the track's queue. aiortc still
starts its thread; it waits, idle, for the receiver to stop, and then ends the track as it
always does.

The queue, the thread and the track's queue are private attributes of aiortc's receiver,
like the jitter buffer in :mod:`media.jitter`; :func:`decode_audio_inline` says when it
cannot find them and leaves the receiver as it is.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import av
from aiortc.codecs import get_decoder
from loguru import logger

__all__ = ["InlineAudioDecoder", "decode_audio_inline"]

_QUEUE = "_RTCRtpReceiver__decoder_queue"
_THREAD = "_RTCRtpReceiver__decoder_thread"


class InlineAudioDecoder:
    """A receiver's decoder queue that decodes each frame as it is put."""

    def __init__(self, frames: asyncio.Queue[Any]) -> None:
        self._frames = frames
        self._decoder: Any = None
        self._codec = ""
        self._stopped = threading.Event()
        self.failures = 0  #: frames that did not decode (each logged)

    def put(self, item: tuple[Any, Any] | None) -> None:
        """The receiver hands over ``(codec, encoded frame)``, or ``None`` when it stops."""
        if item is None:
            self._stopped.set()  # aiortc's thread then ends the track
            return
        codec, encoded = item
        if codec.name != self._codec:
            self._decoder, self._codec = get_decoder(codec), codec.name
        try:
            frames = self._decoder.decode(encoded)
        except av.FFmpegError as exc:
            self.failures += 1
            logger.warning(f"an audio frame did not decode: {exc}")
            return
        for frame in frames:
            self._frames.put_nowait(frame)

    def get(self) -> None:
        """What aiortc's decoder thread waits on: nothing comes until the receiver stops."""
        self._stopped.wait()


def decode_audio_inline(pc: Any) -> int:
    """Decode the audio of every receiver of ``pc`` not yet receiving on the event loop.

    Call after a remote description is set and before the connection is up (aiortc starts
    the decoder thread when it starts receiving). Returns how many receivers changed now.
    """
    changed = 0
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "audio" or receiver is None or receiver.track is None:
            continue  # (no track: the peer sends no audio here)
        current = getattr(receiver, _QUEUE, None)
        if isinstance(current, InlineAudioDecoder):
            continue
        if current is None or getattr(receiver, _THREAD, True) is not None:
            logger.warning("this aiortc receiver cannot decode on the loop; kept its thread")
            continue
        setattr(receiver, _QUEUE, InlineAudioDecoder(receiver.track._queue))
        changed += 1
    return changed
