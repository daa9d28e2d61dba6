"""Time to first word: ``POST /start`` sent → the first loud packet of the bot's greeting.

Both bots run the built-in agent with ``VOICEBOTS_GREETING`` set; it queues the greeting to
its TTS when the client connects (``on_client_connected``). Each call is the headless caller
(:class:`benchmarks.caller.Call`) sending digital silence: the clock starts just before its ``POST
/start`` and stops at the arrival of the RTP packet of the first 20 ms frame it decodes above
the caller's silence threshold (:attr:`benchmarks.caller.CallResult.first_audio_at`, noted as the
packet arrives). In between: the start, the offer and its answer, ICE and DTLS, the bot's
pipeline starting, the greeting's TTS request to the fake OpenAI server and the first audio
out. The fake's injected first-byte delay is subtracted; nothing else is injected.

Calls are placed in bursts (all ``size`` calls start at once) and hang up at their first word.
voicebots' pool is refilled before each burst, so every call gets a warm bot, as in service.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.caller import Call, CallOptions
from benchmarks.config import BenchConfig
from benchmarks.heap import settle_heap
from benchmarks.progress import Progress
from benchmarks.signaling_client import CallError, SignalingClient
from benchmarks.stats import percentile, ratio, summarize
from benchmarks.systems import GREETING, run_systems
from media.audio import write_wav

__all__ = ["FirstWords", "first_words", "run_first_words"]

#: A call with no loud bot audio by then counts as failed.
FIRST_WORD_TIMEOUT_S = 15.0
_POLL_S = 0.05  # the instant is the packet's arrival, so the poll adds nothing to it


@dataclass(frozen=True)
class FirstWords:
    size: int
    ttfw_ms: tuple[float, ...]  #: one per call that heard the greeting, nothing subtracted
    failures: tuple[str, ...]


def silence_wav(path: Path, seconds: float = 0.5) -> Path:
    """What the callers "say": digital silence, so the bot's VAD never hears a turn."""
    write_wav(path, np.zeros(int(seconds * 48000), np.int16), 48000)
    return path


async def _first_word(url: str, wav: Path, http: httpx.AsyncClient) -> float:
    options = CallOptions(url=url, wav=wav, max_seconds=FIRST_WORD_TIMEOUT_S)
    call = Call(options, SignalingClient(url, http=http))
    try:
        sent = time.monotonic()
        await call.connect()
        while (first := call.result("first_word", {}).first_audio_at) is None:
            if time.monotonic() - sent > FIRST_WORD_TIMEOUT_S:
                raise TimeoutError(f"no greeting within {FIRST_WORD_TIMEOUT_S:.0f} s")
            await asyncio.sleep(_POLL_S)
        return (first - sent) * 1000
    finally:
        await call.close()


async def run_first_words(url: str, wav: Path, size: int, http: httpx.AsyncClient) -> FirstWords:
    """``size`` calls placed at once; each one's time to first word (ms)."""
    timed = await asyncio.gather(
        *(_first_word(url, wav, http) for _ in range(size)), return_exceptions=True
    )
    failures = []
    for t in timed:
        if isinstance(t, BaseException) and not isinstance(t, CallError | OSError | TimeoutError):
            raise t
        if isinstance(t, BaseException):
            failures.append(str(t) or type(t).__name__)
    return FirstWords(size, tuple(t for t in timed if isinstance(t, float)), tuple(failures))


async def first_words(config: BenchConfig, work: Path, progress: Progress) -> dict[str, Any]:
    """The stage: voicebots and the runner with the greeting on, bursts alternating."""
    wav = silence_wav(work / "silence.wav")
    warm = max(config.ttfw_bursts)
    subtract_ms = config.speech_first_byte_delay * 1000
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    with run_systems(config, greeting=GREETING, warm_bots=warm) as systems:
        vb, runner = systems.voicebots, systems.runner
        targets = ((vb.name, vb.url), (runner.name, runner.url))
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            for _name, url in targets:  # warm-up: first-use code paths; not recorded
                await run_first_words(url, wav, 1, http)
            bursts = []
            for size, rounds in zip(config.ttfw_bursts, config.ttfw_rounds, strict=True):
                samples: dict[str, list[float]] = {name: [] for name, _ in targets}
                failures: dict[str, list[str]] = {name: [] for name, _ in targets}
                for round_no in range(1, rounds + 1):
                    for name, url in targets:
                        if name == vb.name:
                            await vb.wait_warm(http, warm)
                        await asyncio.sleep(config.settle_s)
                        settle_heap()
                        result = await run_first_words(url, wav, size, http)
                        samples[name].extend(ms - subtract_ms for ms in result.ttfw_ms)
                        failures[name].extend(result.failures)
                    progress.say(
                        f"{size:>2} at once, round {round_no}/{rounds}: p50 voicebots "
                        f"{percentile(samples[vb.name], 50):.0f} ms, pipecat runner "
                        f"{percentile(samples[runner.name], 50):.0f} ms"
                    )
                ours, theirs = summarize(samples[vb.name]), summarize(samples[runner.name])
                bursts.append(
                    {
                        "size": size,
                        vb.name: ours.to_json(),
                        runner.name: theirs.to_json(),
                        "ratio_runner_p50": ratio(ours.p50, theirs.p50),
                        "failures": {name: len(f) for name, f in failures.items()},
                        "failure_reasons": sorted({r for f in failures.values() for r in f})[:5],
                    }
                )
    return {"greeting": GREETING, "subtracted_ms": subtract_ms, "bursts": bursts}
