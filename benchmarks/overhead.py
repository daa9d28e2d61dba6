"""The framework's voice-to-voice overhead: what voicebots adds to the waits it is told to do.

The caller speaks one question (then digital silence) and measures, with the headless caller's
own clock, **voice-to-voice** = ``reply_at - speech_end_at``: from the instant the last loud
sample of the question is played (its frame goes to the encoder when complete, as from a
microphone) to the arrival of the packet of the first loud 20 ms frame of the bot's reply it
decodes.
From that, every wait that is configured or injected is removed:

- the **VAD stop time**: how much audio after the user's last loud sample the VAD took in
  before declaring "stopped speaking". The bot measures it on every stop, on the audio it
  analysed (``vad_silence_ms`` of its turn report, see ``bots.vad``): the agent's
  ``VAD_STOP_SECS`` (``bots.config``) rounded to Silero's 32 ms windows, plus the windows the model
  still scores as speech once the voice has ended (up to a window and a half, by where the
  speech ends in a window). A bot that reports no measurement is charged the configured value
  (:attr:`Subtracted.vad_stop`), or the value given to :func:`run_level` (pipecat's runner,
  which keeps no session record, is charged what voicebots' bots measured on the same
  utterance with the same VAD); the overhead with the configured value subtracted instead is
  kept beside the other (``overhead_configured_vad_ms``);
- ``turn_wait``: ``max(TURN_STOP_SECS, transcription delay)`` — the agent's turn strategy
  ends the turn when its timer (started at the VAD stop) has run *and* the segment's
  transcript is in; the fake's transcription delay runs in parallel with the timer, so only
  the longer of the two is a wait;
- ``llm_first_token``: the fake LLM's delay before its first streamed token (the whole short
  reply follows at once, so no sentence aggregation wait is injected);
- ``tts_first_byte``: the fake TTS's delay before its first audio byte (its tone synthesis is
  instant, so the delay is exact).

The caller keeps no jitter buffer and times the reply by its packet's arrival (see
:class:`benchmarks.caller.CallResult`), so nothing of the measuring client needs subtracting.

Where the bot's turn report carries its VAD stop on the host clock (``vad_stop_at``), the
overhead is split in three: **in** = speech end → VAD stop, minus the VAD stop time; **bot** =
VAD stop → the bot's first audio out, minus the turn wait and the provider delays; **out** =
first audio out → the caller's reply packet.

What remains — audio receive and decode in the bot (including its own jitter buffer,
``BotConfig.jitter_frames`` x 20 ms), resampling, frame hops through the pipeline, the HTTP
round trips to the providers, TTS audio through the output transport, Opus encoding and
packetization — is the framework's overhead.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.caller import CallOptions, CallResult, run_call
from benchmarks.signaling_client import CallError

__all__ = ["LevelRound", "LoopLag", "Subtracted", "TurnSample", "run_level"]


@dataclass(frozen=True)
class Subtracted:
    """Seconds subtracted from each voice-to-voice measurement (see the module docstring)."""

    vad_stop: float
    turn_wait: float
    llm_first_token: float
    tts_first_byte: float

    @classmethod
    def of(
        cls,
        *,
        vad_stop_secs: float,
        turn_stop_secs: float,
        transcription_delay: float,
        first_token_delay: float,
        speech_first_byte_delay: float,
    ) -> Subtracted:
        return cls(
            vad_stop=vad_stop_secs,
            turn_wait=max(turn_stop_secs, transcription_delay),
            llm_first_token=first_token_delay,
            tts_first_byte=speech_first_byte_delay,
        )

    @property
    def after_vad(self) -> float:
        """The waits from the VAD stop on."""
        return self.turn_wait + self.llm_first_token + self.tts_first_byte

    @property
    def total(self) -> float:
        return self.vad_stop + self.after_vad

    def to_json(self) -> dict[str, Any]:
        data = {f"{k}_ms": round(v * 1000, 1) for k, v in asdict(self).items()}
        data["total_ms"] = round(self.total * 1000, 1)
        return data


@dataclass(frozen=True)
class TurnSample:
    voice_to_voice_ms: float
    overhead_ms: float
    #: The VAD stop time subtracted: measured by the bot, or the configured one.
    vad_stop_ms: float
    #: The overhead with the configured VAD stop subtracted instead of the measured one.
    overhead_configured_vad_ms: float
    #: The bot's own milestones of the turn, ms after its VAD stop (``bots.turn_metrics``).
    bot_turn: dict[str, float]
    #: The overhead split into in / bot / out (ms), when the bot reported ``vad_stop_at``.
    split: dict[str, float] | None = None


@dataclass(frozen=True)
class LevelRound:
    calls: int
    samples: tuple[TurnSample, ...]
    failures: tuple[str, ...]  #: calls with no measurable reply, and why
    loop_lag_ms: float  #: the caller's worst event-loop delay during the round


class LoopLag:
    """Measures how late this process's event loop wakes up: the callers' own contention."""

    def __init__(self, tick: float = 0.01) -> None:
        self._tick = tick
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self._tick)
            self.worst = max(self.worst, time.monotonic() - started - self._tick)


def _sample(
    result: CallResult, subtracted: Subtracted, vad_stop_fallback: float | None = None
) -> TurnSample | str:
    if result.first_audio_s is None:
        return f"no reply ({result.end_reason}, status {result.status or '?'})"
    # A server without a session record (pipecat's runner) reports no turn: {} then.
    turns = (result.session.get("metrics") or {}).get("turns") or [{}]
    bot_turn = {k: float(v) for k, v in turns[0].items() if isinstance(v, int | float)}
    v2v = result.first_audio_s
    measured = bot_turn.get("vad_silence_ms")
    if measured is not None:
        vad_stop = measured / 1000
    elif vad_stop_fallback is not None:
        vad_stop = vad_stop_fallback
    else:
        vad_stop = subtracted.vad_stop
    return TurnSample(
        voice_to_voice_ms=v2v * 1000,
        overhead_ms=(v2v - vad_stop - subtracted.after_vad) * 1000,
        vad_stop_ms=vad_stop * 1000,
        overhead_configured_vad_ms=(v2v - subtracted.total) * 1000,
        bot_turn={k: v for k, v in bot_turn.items() if k != "vad_stop_at"},
        split=_split(result, bot_turn, vad_stop, subtracted),
    )


def _split(
    result: CallResult, bot_turn: dict[str, float], vad_stop: float, subtracted: Subtracted
) -> dict[str, float] | None:
    vad_stop_at, audio_out_ms = bot_turn.get("vad_stop_at"), bot_turn.get("audio_out_ms")
    speech_end_at, reply_at = result.speech_end_at, result.reply_at
    if vad_stop_at is None or audio_out_ms is None or speech_end_at is None or reply_at is None:
        return None
    out_from = vad_stop_at + audio_out_ms / 1000
    return {
        "in_ms": round((vad_stop_at - speech_end_at - vad_stop) * 1000, 1),
        "bot_ms": round(audio_out_ms - subtracted.after_vad * 1000, 1),
        "out_ms": round((reply_at - out_from) * 1000, 1),
    }


async def _delayed_call(options: CallOptions, delay: float) -> CallResult:
    await asyncio.sleep(delay)
    return await run_call(options)


async def run_level(
    url: str,
    wav: Path,
    calls: int,
    subtracted: Subtracted,
    spread_s: float,
    vad_stop_fallback: float | None = None,
) -> LevelRound:
    """``calls`` calls, their starts spread evenly over ``spread_s`` seconds, each asking once.

    A call whose server reports no VAD stop of its own is charged ``vad_stop_fallback``
    seconds when given, else the configured :attr:`Subtracted.vad_stop`.
    """
    options = CallOptions(url=url, wav=wav, max_seconds=20.0, reply_silence=0.3, session_wait=5.0)
    step = spread_s / calls
    async with LoopLag() as lag:
        results = await asyncio.gather(
            *(_delayed_call(options, i * step) for i in range(calls)), return_exceptions=True
        )
    samples: list[TurnSample] = []
    failures: list[str] = []
    for result in results:
        if isinstance(result, CallError | OSError | TimeoutError):
            failures.append(str(result))
        elif isinstance(result, BaseException):
            raise result
        else:
            sample = _sample(result, subtracted, vad_stop_fallback)
            if isinstance(sample, str):
                failures.append(sample)
            else:
                samples.append(sample)
    return LevelRound(calls, tuple(samples), tuple(failures), lag.worst * 1000)
