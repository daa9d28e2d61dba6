"""What a call's record holds, read from the frames of whatever pipeline the bot file runs.

The user's bot file builds its own ``PipelineWorker``; voicebots never sees it being made. It
reaches it through pipecat's public hook instead: pipecat runs ``setup_pipeline_worker(worker)``
from each file in ``PIPECAT_SETUP_FILES`` as each worker sets up (:mod:`bots.pipecat_setup` is
voicebots' file), and that attaches this call's observers to the worker:

- :class:`TranscriptObserver` — both roles in order: the user's final transcriptions (each
  ``TranscriptionFrame``, joined per turn), and what the bot actually said: the
  ``TTSTextFrame`` text as it leaves the output transport, which it does only once its audio
  has been played, so a reply cut by a barge-in is recorded up to where it was cut;
- :class:`bots.turn_metrics.TurnMetricsObserver` — each turn's latency milestones.

:class:`CallRecording` is the one call of this bot process (a bot serves one call), known to
the hook as the process's current recording.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    AudioRawFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    SystemFrame,
    TranscriptionFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.transports.base_output import BaseOutputTransport

from bots.turn_metrics import TurnMetricsObserver, TurnReport
from common.record import TranscriptLine

__all__ = ["CallRecording", "LineCallback", "TranscriptObserver", "attach_current", "install"]

LineCallback = Callable[[TranscriptLine], Awaitable[None]]
TurnCallback = Callable[[TurnReport], Awaitable[None]]

#: At most this long for the observers to take in what a pipeline pushed before it is
#: cancelled at hang-up: the last words of a call must not be lost to the cancellation.
OBSERVER_DRAIN = 0.5


class _DrainMark(SystemFrame):
    """Queued into a worker at hang-up: once the transcript observer has seen it, it has
    seen every frame pushed before it (each observer takes frames in push order)."""


class TranscriptObserver(BaseObserver):
    """Turns the frames of any pipeline into transcript lines, in the order they happened."""

    def __init__(self, on_line: LineCallback) -> None:
        # Every push: spoken text is read where it leaves the output transport, not where
        # the TTS made it.
        super().__init__()
        self._on_line = on_line
        self._user: list[str] = []
        self._bot: list[str] = []
        self._heard: set[int] = set()
        self._marks: dict[int, asyncio.Event] = {}
        #: When caller audio last entered the pipeline (the idle watchdog's clock).
        self.last_audio_at = time.monotonic()

    def mark(self) -> tuple[_DrainMark, asyncio.Event]:
        frame = _DrainMark()
        event = asyncio.Event()
        self._marks[frame.id] = event
        return frame, event

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, AudioRawFrame):
            if isinstance(frame, InputAudioRawFrame) and data.first_push:
                self.last_audio_at = time.monotonic()
            return
        if isinstance(frame, TTSTextFrame):
            if (
                isinstance(data.source, BaseOutputTransport)
                and data.direction is FrameDirection.DOWNSTREAM
                and not frame.skip_tts
            ):
                self._bot.append(
                    frame.text if frame.includes_inter_frame_spaces else f" {frame.text}"
                )
            return
        if not data.first_push:
            return
        if isinstance(frame, _DrainMark):
            event = self._marks.pop(frame.id, None)
            if event is not None:
                event.set()
        elif isinstance(frame, TranscriptionFrame) and not isinstance(
            frame, InterimTranscriptionFrame
        ):
            if frame.id not in self._heard and frame.text.strip():
                self._heard.add(frame.id)
                self._user.append(frame.text.strip())
        elif isinstance(frame, (LLMFullResponseStartFrame, BotStartedSpeakingFrame)):
            await self._flush_user()
        elif isinstance(frame, (BotStoppedSpeakingFrame, InterruptionFrame)):
            await self._flush_bot()

    async def _flush_user(self) -> None:
        text = " ".join(self._user).strip()
        self._user.clear()
        if text:
            await self._on_line(TranscriptLine(role="user", text=text, ts=time.time()))

    async def _flush_bot(self) -> None:
        text = " ".join("".join(self._bot).split())
        self._bot.clear()
        if text:
            await self._on_line(TranscriptLine(role="assistant", text=text, ts=time.time()))

    async def flush(self) -> None:
        """Record what is still pending: words heard or spoken when the call ended."""
        await self._flush_user()
        await self._flush_bot()


class CallRecording:
    """The observers of this process's one call, attached to each worker that sets up."""

    def __init__(self, on_line: LineCallback, on_turn: TurnCallback) -> None:
        self.transcript = TranscriptObserver(on_line)
        self._on_turn = on_turn
        self.turns = TurnMetricsObserver(self._turn)
        self.workers: list[PipelineWorker] = []

    def attach(self, worker: PipelineWorker) -> None:
        """Observe ``worker`` (from pipecat's setup hook, before its processors start)."""
        if not self.workers:
            # The turn milestones are those of the conversation's own pipeline, the first.
            worker.add_observer(self.turns)
        worker.add_observer(self.transcript)
        self.workers.append(worker)

    async def _turn(self, report: TurnReport) -> None:
        await self._on_turn(report)
        if self.workers:
            # The page shows it as the turn's latency (an RTVI server message).
            await self.workers[0].queue_frames(
                [RTVIServerMessageFrame(data={"type": "turn-metrics", **report})]
            )

    async def drain(self, timeout: float = OBSERVER_DRAIN) -> bool:
        """Wait until the transcript observer has taken in what every worker pushed so far;
        returns whether it did within ``timeout``."""
        events = []
        for worker in self.workers:
            frame, event = self.transcript.mark()
            await worker.queue_frames([frame])
            events.append(event)
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout)
        except TimeoutError:
            return False
        return True

    async def cancel_workers(self) -> None:
        """End the pipelines (hang-up): once the observers have caught up, cancel each."""
        if self.workers and not await self.drain():
            logger.warning("the observers were still behind the pipeline when it ended")
        for worker in self.workers:
            await worker.cancel()

    async def close(self) -> None:
        await self.transcript.flush()


_current: CallRecording | None = None


def install(recording: CallRecording) -> None:
    """Make ``recording`` the one the setup hook attaches to the workers of this process."""
    global _current
    _current = recording


def attach_current(worker: Any) -> None:
    """The setup hook's body: observe ``worker`` for the current call, if there is one."""
    if _current is not None and isinstance(worker, PipelineWorker):
        _current.attach(worker)
