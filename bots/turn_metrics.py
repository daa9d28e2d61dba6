"""Per-turn latency, measured inside the bot from the frames its pipeline pushes.

Milestones of a turn, in milliseconds after the VAD's "user stopped speaking":

    stt_ms          the last final transcription of the turn
    turn_end_ms     the turn strategy decided the user was done
    llm_first_ms    the LLM's first token
    tts_first_ms    the first synthesized audio
    audio_out_ms    the transport started sending bot audio — voice-to-voice, as the bot sees it
                    (when the transport never said the bot started speaking, because it still
                    counted it as speaking, the first reply chunk it wrote; the report then
                    has ``bot_was_speaking``)

and ``vad_stop_at``, the VAD stop itself on the host's monotonic clock (seconds, the clock of
``time.monotonic()`` in every process), so a client on the same host can split its own
voice-to-voice time into the way in (to the VAD stop) and the way out (after ``audio_out``).

The VAD stop itself comes ``stop_secs`` after the user's last sound; that wait is the
configured price of knowing speech ended, and is reported separately as ``vad_wait_ms`` (read
from the ``SpeechControlParamsFrame`` the VAD announces its parameters with). A VAD that
measures its stops (``bots.vad.MeasuringSileroVAD``, which the built-in agent uses) also gives
``vad_silence_ms``: the audio after the user's last loud sample it actually took in before
deciding — the configured wait rounded to its analysis windows, plus the windows its model
still heard as speech.

The user aggregator runs the VAD and sends each of its events twice, as two separate frames:
upstream at once, and downstream once its own input queue reaches it — which, on a bot held
to its CPU share, can be a second later, after the transcription it caused. Only the upstream
copy is read here, so every milestone is measured from when the VAD actually decided.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    LLMTextFrame,
    SpeechControlParamsFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_output import BaseOutputTransport

from bots.vad import measuring

__all__ = ["MeasuredVAD", "ReportCallback", "TurnMetricsObserver", "TurnReport"]

TurnReport = dict[str, Any]
ReportCallback = Callable[[TurnReport], Awaitable[None]]


class MeasuredVAD(Protocol):
    #: Seconds of audio after the last loud sample the VAD took in before its last stop.
    stop_silence_secs: float | None


class TurnMetricsObserver(BaseObserver):
    def __init__(
        self,
        on_turn: ReportCallback,
        vad_stop_secs: float | None = None,
        vad: MeasuredVAD | None = None,
    ) -> None:
        # Each frame once, where it is first pushed: not again at every processor it crosses
        # (an audio frame crosses five), which would cost a queue hop each.
        super().__init__(observe_every_push=False)
        self._on_turn = on_turn
        self._vad_wait_ms = None if vad_stop_secs is None else round(vad_stop_secs * 1000, 1)
        #: The VAD measuring its stops; when not given, the process's (``bots.vad.measuring``).
        self._vad = vad
        self._turns = 0
        #: Host monotonic ns minus pipeline clock ns: the least seen is the true offset plus
        #: the shortest delay between a push and its observation.
        self._clock_offset: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._vad_stop: int | None = None
        self._vad_silence: float | None = None
        self._marks: dict[str, int] = {}

    async def on_push_frame(self, data: FramePushed) -> None:
        if not data.first_push:
            return  # (the pipeline sends only first pushes; a direct caller may not)
        frame, now = data.frame, data.timestamp
        if isinstance(frame, SpeechControlParamsFrame):
            if frame.vad_params is not None:
                self._vad_wait_ms = round(frame.vad_params.stop_secs * 1000, 1)
            return
        offset = time.monotonic_ns() - now
        if self._clock_offset is None or offset < self._clock_offset:
            self._clock_offset = offset
        if isinstance(frame, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)) and (
            data.direction is not FrameDirection.UPSTREAM
        ):
            return  # the queued downstream copy of a VAD event: late, see the module doc
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._reset()  # new speech (or a barge-in) starts the measurement over
        elif isinstance(frame, UserStartedSpeakingFrame):
            # A turn can also start from a late transcription, without new speech: the
            # reference stays the end of the last speech the VAD heard.
            self._marks = {}
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            if "turn_end" not in self._marks:
                self._vad_stop = now
                vad = self._vad if self._vad is not None else measuring()
                self._vad_silence = None if vad is None else vad.stop_silence_secs
        elif self._vad_stop is None:
            return
        elif isinstance(frame, TranscriptionFrame) and "turn_end" not in self._marks:
            self._marks["stt"] = now
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._marks.setdefault("turn_end", now)
        elif isinstance(frame, LLMTextFrame) and "turn_end" in self._marks:
            self._marks.setdefault("llm_first", now)
        elif isinstance(frame, TTSAudioRawFrame) and isinstance(data.source, BaseOutputTransport):
            if "tts_first" in self._marks:
                # The reply went out without a "bot started speaking": the transport still
                # counted the bot as speaking (audio of an interrupted reply it was already
                # sending when the interruption came). Measured when the first chunk was
                # written instead.
                self._marks["audio_out"] = now
                await self._report(bot_was_speaking=True)
        elif isinstance(frame, TTSAudioRawFrame) and "llm_first" in self._marks:
            self._marks.setdefault("tts_first", now)
        elif isinstance(frame, BotStartedSpeakingFrame) and "tts_first" in self._marks:
            self._marks["audio_out"] = now
            await self._report()

    async def _report(self, bot_was_speaking: bool = False) -> None:
        assert self._vad_stop is not None
        self._turns += 1
        report: TurnReport = {"turn": self._turns}
        if self._vad_wait_ms is not None:
            report["vad_wait_ms"] = self._vad_wait_ms
        if bot_was_speaking:
            report["bot_was_speaking"] = True
        if self._vad_silence is not None:
            report["vad_silence_ms"] = round(self._vad_silence * 1000, 1)
        if self._clock_offset is not None:
            report["vad_stop_at"] = round((self._vad_stop + self._clock_offset) / 1e9, 4)
        for name in ("stt", "turn_end", "llm_first", "tts_first", "audio_out"):
            if name in self._marks:
                report[f"{name}_ms"] = round((self._marks[name] - self._vad_stop) / 1e6, 1)
        self._reset()
        await self._on_turn(report)
