"""The bot's WebRTC transport: pipecat's, except that an interruption stops the voice for good.

pipecat's processors take their frames from a priority queue in which system frames go first.
An ``InterruptionFrame`` that reaches the output transport while audio frames the TTS pushed
just before it still wait in that queue is therefore handled *before* them: the transport
clears what it was about to play, then plays the frames that were queued ahead of the
interruption, over the caller who has just started speaking, and counts the bot as speaking
from then on, so the next reply starts without a "bot started speaking". A bot held to its CPU
share, whose output runs late, is where that queue holds frames.

The output's sender has the same race one step later: a chunk it takes off its audio queue
just before the interruption empties that queue is sent just after, with the same effect.

:class:`StaleAudioGuard` notes, as each frame is queued (in push order, before the priority
queue), how many interruptions were queued before it, and drops interruptible audio that an
interruption queued after it has overtaken; and it does not write a chunk made before the
interruption it last handled, ending the "bot speaking" that chunk started instead.
Uninterruptible audio is always played.
:class:`VoiceTransport` is pipecat's ``SmallWebRTCTransport`` with that guard on its output.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from pipecat.frames.frames import Frame, InterruptionFrame, OutputAudioRawFrame
from pipecat.processors.frame_processor import FrameCallback, FrameDirection
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.smallwebrtc.transport import (
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)
from pipecat.utils.utils import obj_id

__all__ = ["StaleAudioGuard", "VoiceOutputTransport", "VoiceTransport"]

#: Frame metadata: the number of interruptions queued to the output before the frame was.
_INTERRUPTIONS_BEFORE = "voicebots.interruptions_before"


class StaleAudioGuard(BaseOutputTransport):
    """For an output transport: never sends interruptible audio from before an interruption."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._interruptions = 0
        #: Frame ids grow with each frame made: a smaller one was made before the interruption.
        self._interrupted_at_id = 0
        #: Audio frames dropped because an interruption came after them.
        self.stale_frames = 0

    async def queue_frame(
        self,
        frame: Frame,
        direction: FrameDirection = FrameDirection.DOWNSTREAM,
        callback: FrameCallback | None = None,
    ) -> None:
        if isinstance(frame, InterruptionFrame):
            self._interruptions += 1
        elif isinstance(frame, OutputAudioRawFrame) and frame.interruptible:
            frame.metadata[_INTERRUPTIONS_BEFORE] = self._interruptions
        await super().queue_frame(frame, direction, callback)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if (
            isinstance(frame, OutputAudioRawFrame)
            and frame.metadata.get(_INTERRUPTIONS_BEFORE, self._interruptions) < self._interruptions
        ):
            self.stale_frames += 1
            logger.debug(f"{self}: dropped {frame}, queued before an interruption")
            return
        if isinstance(frame, InterruptionFrame):
            self._interrupted_at_id = obj_id()
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if frame.interruptible and frame.id < self._interrupted_at_id:
            self.stale_frames += 1
            logger.debug(f"{self}: not sending {frame}, taken to send before an interruption")
            # Taking it started the bot speaking again; no audio follows it. (The sender's
            # method is private; pipecat is pinned in pyproject.toml.)
            sender = self._media_senders.get(frame.transport_destination)
            if sender is not None:
                await sender._bot_stopped_speaking()
            return False
        return await super().write_audio_frame(frame)


class VoiceOutputTransport(StaleAudioGuard, SmallWebRTCOutputTransport):
    """pipecat's WebRTC output transport with the :class:`StaleAudioGuard`."""


class VoiceTransport(SmallWebRTCTransport):
    """pipecat's WebRTC transport whose output is a :class:`VoiceOutputTransport`.

    It builds the output from the transport's own client and parameters, as pipecat's
    ``output()`` does (private attributes; pipecat is pinned in pyproject.toml).
    """

    def output(self) -> SmallWebRTCOutputTransport:
        if not self._output:
            self._output = VoiceOutputTransport(self._client, self._params, name=self._output_name)
        return self._output
