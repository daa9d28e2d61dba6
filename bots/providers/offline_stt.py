"""Offline speech-to-text: pocketsphinx's bundled US-English model, no key, no network.

Accuracy is far below a cloud model; this provider exists so a bot runs end to end
with no API key (development, CI, air-gapped demos).
"""

from __future__ import annotations

import asyncio
import io
import threading
import wave
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import numpy as np
import soxr
from pipecat.frames.frames import Frame, StartFrame, TranscriptionFrame
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from pocketsphinx import Decoder

__all__ = [
    "DECODER_SAMPLE_RATE",
    "PocketsphinxSTTService",
    "preload_decoder",
    "wav_to_decoder_pcm",
]

#: The rate pocketsphinx's acoustic model was trained at; every segment is resampled to it.
DECODER_SAMPLE_RATE = 16000

# Digital silence (exact zeros: the silence SegmentedSTTService pads every segment with,
# a muted microphone, or synthetic speech) has no defined log energy, and the decoder
# hallucinates words in it ("dog" for one second of zeros). Dither, pocketsphinx's own
# +-1/2 LSB noise, gives those samples a noise floor; a fixed seed keeps results
# reproducible from run to run.
_DEFAULT_DECODER_CONFIG: dict[str, Any] = {"dither": True, "seed": 42}

# A decoder of the default model created before the process forks (see preload_decoder);
# the first service of each forked process takes it instead of building its own.
_preloaded: Decoder | None = None
_preloaded_lock = threading.Lock()

# Decoding runs at roughly 0.2x real time on a small (2-core) host, after the segment ends,
# so a typical 2-5 s utterance yields its transcript within a second.
_DEFAULT_TTFS_P99_SECS = 1.0


def preload_decoder() -> None:
    """Create a decoder of the default model now, for processes forked later to take.

    The zygote calls this (``bots.preload``) when bots transcribe offline. Each bot then
    starts with the decoder in memory, shared copy-on-write: the acoustic model, dictionary
    and language model (~90 MB) are read, never written, while decoding, so they stay shared
    by every bot; a bot's private memory for the decoder (measured after two decodes) drops
    from ~94 MB to ~22 MB, and its 0.25-0.5 s of loading moves out of the call. pocketsphinx
    starts no threads, so the decoder is safe to fork. Each forked process holds its own
    copy-on-write copy of the decoder's state (its cepstral-mean estimate included), as fresh
    as a newly created one.
    """
    global _preloaded
    with _preloaded_lock:
        if _preloaded is None:
            _preloaded = Decoder(**_DEFAULT_DECODER_CONFIG)


def _take_preloaded(config: Mapping[str, Any]) -> Decoder | None:
    """The preloaded decoder if it fits ``config``; each process hands it out once."""
    global _preloaded
    with _preloaded_lock:
        if _preloaded is None or dict(config) != _DEFAULT_DECODER_CONFIG:
            return None
        decoder, _preloaded = _preloaded, None
        return decoder


def wav_to_decoder_pcm(wav_bytes: bytes) -> bytes:
    """Turn a 16-bit PCM WAV file into mono 16 kHz little-endian int16 samples.

    Args:
        wav_bytes: A complete WAV file, as SegmentedSTTService hands to ``run_stt``.

    Returns:
        Raw PCM as pocketsphinx's ``process_raw`` expects it.

    Raises:
        ValueError: If the WAV is not 16-bit PCM.
    """
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM WAV, got {8 * wav.getsampwidth()}-bit")
        channels = wav.getnchannels()
        rate = wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    samples = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        # Average the channels in a wider type so loud stereo cannot overflow int16.
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    if rate != DECODER_SAMPLE_RATE and samples.size:
        samples = soxr.resample(samples, rate, DECODER_SAMPLE_RATE)
    return np.ascontiguousarray(samples, dtype="<i2").tobytes()


class PocketsphinxSTTService(SegmentedSTTService):
    """Segmented STT that transcribes each VAD segment with a pocketsphinx ``Decoder``.

    Construction is cheap: the decoder is built by :meth:`load`, which ``start``
    runs in a worker thread (and ``run_stt`` falls back to on first use), unless one was
    preloaded before the process forked (:func:`preload_decoder`). Measured
    on a 2-core x86-64 host with pocketsphinx 5.1.1's bundled en-us model: creating
    the ``Decoder`` takes 0.25-0.5 s and adds about 91 MB of RSS (per service, so per
    bot process); decoding takes about 0.17-0.2x the segment's duration (0.75 s for
    the 4.3 s test fixture, which it hears as "hello what time is it a very").

    pocketsphinx carries its cepstral-mean estimate from one utterance into the next,
    so the same audio may decode slightly differently as the first and as a later
    segment of a call.
    """

    def __init__(
        self,
        *,
        decoder_config: Mapping[str, Any] | None = None,
        preload: bool = True,
        ttfs_p99_latency: float | None = _DEFAULT_TTFS_P99_SECS,
        **kwargs: Any,
    ) -> None:
        """Create the service without loading the model.

        Args:
            decoder_config: ``pocketsphinx.Decoder`` options (e.g. ``hmm``, ``lm``,
                ``dict`` for another model), over the defaults: the bundled en-us
                model, with dither on.
            preload: Load the decoder when the pipeline starts rather than on the
                first segment, so the first reply does not pay for it.
            ttfs_p99_latency: Speech end to final transcript, P99, in seconds; turn
                strategies read it to know how long to wait for a transcript.
            **kwargs: Passed to ``SegmentedSTTService`` (e.g. ``sample_rate``).
        """
        settings = STTSettings(model="pocketsphinx-en-us", language=Language.EN_US)
        super().__init__(ttfs_p99_latency=ttfs_p99_latency, settings=settings, **kwargs)
        self._decoder_config = {**_DEFAULT_DECODER_CONFIG, **(decoder_config or {})}
        self._preload = preload
        self._decoder: Decoder | None = None
        # The decoder is not thread-safe, and a cancelled to_thread call keeps running:
        # the lock keeps a later decode (or a concurrent load) from overlapping it.
        self._lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        """Whether the decoder has been created."""
        return self._decoder is not None

    def can_generate_metrics(self) -> bool:
        """Report processing metrics (decode time)."""
        return True

    def load(self) -> None:
        """Create the pocketsphinx decoder if not done yet; blocking, thread-safe."""
        with self._lock:
            self._load_locked()

    async def start(self, frame: StartFrame) -> None:
        """Start the service, loading the decoder off the event loop if ``preload``.

        Args:
            frame: The pipeline's start frame.
        """
        await super().start(frame)
        if self._preload:
            await asyncio.to_thread(self.load)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Transcribe one speech segment.

        Args:
            audio: The segment as a 16-bit PCM WAV file.

        Yields:
            One ``TranscriptionFrame``, or nothing if pocketsphinx heard no words.
        """
        await self.start_processing_metrics()
        try:
            text = await asyncio.to_thread(self._transcribe, audio)
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN_US)

    def _load_locked(self) -> Decoder:
        if self._decoder is None:
            preloaded = _take_preloaded(self._decoder_config)
            if preloaded is None:
                preloaded = Decoder(**self._decoder_config)
            self._decoder = preloaded
        return self._decoder

    def _transcribe(self, wav_bytes: bytes) -> str:
        pcm = wav_to_decoder_pcm(wav_bytes)
        if not pcm:
            return ""
        with self._lock:
            decoder = self._load_locked()
            decoder.start_utt()
            try:
                # full_utt: the whole segment is here, so normalise over all of it.
                decoder.process_raw(pcm, full_utt=True)
            finally:
                decoder.end_utt()
            hypothesis = decoder.hyp()
        return hypothesis.hypstr.strip() if hypothesis is not None else ""
