"""Offline text-to-speech: the espeak-ng command line, no key, no network.

Robotic but instant (a sentence synthesises in tens of milliseconds) and needs
only the ``espeak-ng`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

__all__ = ["EspeakTTSService", "WavFormat", "read_wav_header"]

_PCM_FORMAT = 1
_EXTENSIBLE_FORMAT = 0xFFFE
_READ_LIMIT = 1 << 16


@dataclass(frozen=True)
class WavFormat:
    """What a WAV stream's ``fmt`` chunk says about the samples that follow."""

    sample_rate: int
    channels: int
    bits_per_sample: int


async def read_wav_header(reader: asyncio.StreamReader) -> WavFormat:
    """Read a WAV stream up to the start of its ``data`` chunk.

    Works on a pipe: the RIFF and data sizes are ignored, since a writer that
    streams (``espeak-ng --stdout``) cannot know them and writes placeholders.

    Args:
        reader: The stream, positioned at its first byte.

    Returns:
        The format; ``reader`` is left at the first sample.

    Raises:
        ValueError: If the stream is not a 16-bit PCM WAV.
        asyncio.IncompleteReadError: If it ends before the data chunk.
    """
    riff = await reader.readexactly(12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    wav_format: WavFormat | None = None
    while True:
        chunk_id, size = struct.unpack("<4sI", await reader.readexactly(8))
        if chunk_id == b"data":
            break
        # Chunks are padded to an even length.
        body = await reader.readexactly(size + (size & 1))
        if chunk_id == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag not in (_PCM_FORMAT, _EXTENSIBLE_FORMAT):
                raise ValueError(f"WAV format {tag:#x} is not PCM")
            wav_format = WavFormat(sample_rate=rate, channels=channels, bits_per_sample=bits)
    if wav_format is None:
        raise ValueError("WAV stream has no fmt chunk before its data")
    if wav_format.bits_per_sample != 16:
        raise ValueError(f"expected 16-bit WAV, got {wav_format.bits_per_sample}-bit")
    return wav_format


class EspeakTTSService(TTSService):
    """TTS that runs ``espeak-ng --stdout`` per sentence and streams its audio.

    Each ``run_tts`` starts one ``espeak-ng`` process (no shell; the text goes in on
    stdin, so it is never parsed as options), reads its 22050 Hz mono WAV as it is
    written, resamples it to the pipeline's output rate and yields ``chunk_ms``-long
    ``TTSAudioRawFrame``s. The base class brackets them with ``TTSStartedFrame`` /
    ``TTSStoppedFrame``. If the reply is interrupted the synthesis task is cancelled
    and the process is killed and reaped.
    """

    def __init__(
        self,
        *,
        voice: str = "en-us",
        rate: int = 175,
        executable: str = "espeak-ng",
        chunk_ms: int = 40,
        sample_rate: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the service; check that espeak-ng is installed.

        Args:
            voice: An espeak-ng voice (``espeak-ng --voices``), e.g. ``en-us``,
                ``en-gb``, ``en-us+f3``. Runtime-updatable as the ``voice`` setting.
            rate: Speaking rate in words per minute (espeak-ng's default is 175).
            executable: The espeak-ng binary, a name on ``PATH`` or a path.
            chunk_ms: Duration of each yielded audio frame, in milliseconds.
            sample_rate: Output sample rate; the pipeline's output rate if None.
            **kwargs: Passed to ``TTSService``.

        Raises:
            FileNotFoundError: If ``executable`` cannot be found.
            ValueError: If ``rate`` or ``chunk_ms`` is not positive.
        """
        if rate <= 0 or chunk_ms <= 0:
            raise ValueError("rate and chunk_ms must be positive")
        resolved = shutil.which(executable)
        if resolved is None:
            raise FileNotFoundError(
                f"{executable!r} not found; install espeak-ng (apt-get install espeak-ng)"
            )
        settings = TTSSettings(model="espeak-ng", voice=voice, language=None)
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=sample_rate,
            settings=settings,
            **kwargs,
        )
        self._executable = resolved
        self._default_voice = voice
        self._rate = rate
        self._chunk_ms = chunk_ms
        # Processes of syntheses in flight, killed at teardown in case a cancelled
        # run_tts generator has not been closed (and so has not killed its own) yet.
        self._processes: set[asyncio.subprocess.Process] = set()

    def can_generate_metrics(self) -> bool:
        """Report TTFB, processing and usage metrics."""
        return True

    async def cleanup(self) -> None:
        """Release resources at teardown, killing any espeak-ng still running."""
        await super().cleanup()
        # Only signalled here: the generator that owns each process still reaps it when
        # closed, and two coroutines draining one pipe at once would raise. asyncio's
        # child watcher collects the exit status either way, so no zombie remains.
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Synthesise one piece of text.

        Args:
            text: The text to speak.
            context_id: The audio context the frames belong to.

        Yields:
            ``TTSAudioRawFrame``s at ``self.sample_rate``, or an ``ErrorFrame``.
        """
        text = text.strip()
        if not text:
            return
        await self.start_tts_usage_metrics(text)
        voice = self._settings.voice or self._default_voice
        try:
            process = await asyncio.create_subprocess_exec(
                self._executable,
                "--stdout",
                "--stdin",
                "-b",
                "1",  # stdin is UTF-8
                "-v",
                str(voice),
                "-s",
                str(self._rate),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            yield ErrorFrame(error=f"{self}: cannot run {self._executable}: {e}")
            return
        self._processes.add(process)
        try:
            async for frame in self._stream(process, text, context_id):
                yield frame
        finally:
            # Runs on normal completion, on error, and when an interruption cancels
            # the synthesis task or closes this generator.
            self._processes.discard(process)
            await _kill(process)

    async def _stream(
        self, process: asyncio.subprocess.Process, text: str, context_id: str
    ) -> AsyncGenerator[Frame, None]:
        assert process.stdin is not None and process.stdout is not None
        # espeak-ng --stdin reads all input before it speaks, so writing first cannot
        # deadlock against a full stdout pipe.
        try:
            process.stdin.write(text.encode())
            await process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it exited early (e.g. unknown voice); the header read reports it
        finally:
            process.stdin.close()

        try:
            wav_format = await read_wav_header(process.stdout)
        except (ValueError, asyncio.IncompleteReadError) as e:
            detail = await _exit_detail(process)
            yield ErrorFrame(error=f"{self}: espeak-ng gave no audio ({detail or e})")
            return
        if wav_format.channels != 1:
            yield ErrorFrame(error=f"{self}: expected mono audio, got {wav_format.channels}")
            return

        # A resampler per synthesis: a stream resampler keeps filter state, which must
        # not leak from an interrupted sentence into the next one.
        resampler = create_stream_resampler(clear_after_secs=None)
        in_rate, out_rate = wav_format.sample_rate, self.sample_rate
        frame_bytes = max(2, out_rate * self._chunk_ms // 1000 * 2)
        pending = bytearray()  # input bytes not yet resampled (an odd trailing byte)
        output = bytearray()  # resampled audio not yet yielded

        while True:
            # read() returns whatever is buffered, so a large limit adds no latency.
            data = await process.stdout.read(_READ_LIMIT)
            pending += data
            usable = len(pending) & ~1
            output += await resampler.resample(bytes(pending[:usable]), in_rate, out_rate)
            del pending[:usable]
            if not data:
                # End of stream: the resampler's filter still holds the last few ms.
                output += await resampler.flush()
            # Whole frames while streaming; at the end, the shorter remainder too.
            while len(output) >= frame_bytes or (not data and len(output) >= 2):
                size = min(frame_bytes, len(output) & ~1)
                await self.stop_ttfb_metrics()
                yield TTSAudioRawFrame(bytes(output[:size]), out_rate, 1, context_id=context_id)
                del output[:size]
            if not data:
                break

        detail = await _exit_detail(process)
        if detail:
            yield ErrorFrame(error=f"{self}: espeak-ng failed ({detail})")


async def _exit_detail(process: asyncio.subprocess.Process) -> str:
    """Wait for the process; describe its failure, or return "" if it exited 0."""
    returncode, stderr = await _finish(process)
    if returncode == 0:
        return ""
    message = stderr.decode(errors="replace").strip()
    return f"exit code {returncode}" + (f": {message}" if message else "")


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the process if it is still running, and reap it so no zombie remains."""
    if process.returncode is None:
        # It may exit between the check and the kill.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    if process.stdin is not None:
        process.stdin.close()
    # Shielded: a second cancellation of the caller must not skip the reaping.
    await asyncio.shield(_finish(process))


async def _finish(process: asyncio.subprocess.Process) -> tuple[int, bytes]:
    """Read both output pipes to their end, then wait for the exit; returns (code, stderr)."""
    # Python 3.11's Process.wait() returns only once every pipe has closed, and a
    # stdout reader that stopped reading with a full buffer never sees the pipe's end:
    # without draining, waiting for a killed, interrupted espeak-ng could hang forever.
    _, stderr = await asyncio.gather(_discard(process.stdout), _read_all(process.stderr))
    return await process.wait(), stderr


async def _discard(stream: asyncio.StreamReader | None) -> None:
    while stream is not None and await stream.read(1 << 16):
        pass


async def _read_all(stream: asyncio.StreamReader | None) -> bytes:
    return await stream.read() if stream is not None else b""
