"""A fake ElevenLabs multi-context text-to-speech WebSocket on loopback.

It speaks the protocol of ``wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/multi-stream-input``
that pipecat's ``ElevenLabsTTSService`` uses, so tests point the real service at it with
``url=fake.url``:

- Authentication is the ``xi-api-key`` header, or ``xi_api_key`` in a context's first message
  when the header is absent. A wrong key is accepted at the handshake and then closed with
  1008 (policy violation), as the real service does; ``auth_failure="handshake"`` refuses the
  upgrade with HTTP 403 instead.
- Query parameters: ``model_id``, ``output_format`` (``pcm_8000`` ... ``pcm_48000``; other
  formats are refused), ``auto_mode`` and ``inactivity_timeout`` (default 20 s, at most 180).
  Others (``language_code``, ``enable_logging``, ...) are recorded and otherwise ignored.
- Client messages, each a JSON object:

  - ``{"text": " ", "context_id": C, "voice_settings": {...}}`` opens context ``C`` (a message
    without ``context_id`` goes to a default context). ``voice_settings`` may only be given
    when the context opens, or repeated unchanged; anything else closes the socket with 1008.
  - ``{"text": "Hello. ", "context_id": C}`` appends to ``C``'s buffer. With
    ``auto_mode=true`` the buffer is spoken as soon as it holds a word; otherwise once it
    reaches the ``chunk_length_schedule`` (default 120, 160, 250, 290 characters), cut at the
    last space, or on a flush.
  - ``{"context_id": C, "flush": true}`` (optionally with ``text``) speaks the whole buffer.
  - ``{"context_id": C, "close_context": true}`` drops unflushed text, lets generations
    already started finish, then answers ``{"isFinal": true, "contextId": C}``.
  - ``{"text": ""}``, with or without ``context_id``, is a keep-alive.
  - ``{"close_socket": true}`` closes every context as above, then the socket (1000).

- Server messages: ``{"audio": <base64 s16le mono PCM>, "alignment": {...},
  "normalizedAlignment": {...}, "contextId": C}`` with per-chunk character timings (times
  restart at zero in every message), then ``{"isFinal": true, "contextId": C}``.
- At most 5 contexts may be open at once; no message for ``inactivity_timeout`` seconds closes
  the socket with 1008. Close reasons are cut to the 123 bytes a close frame can carry.
- ``GET /_fake/report`` reports what was received, for tests that run the fake as a process.

The audio is espeak-ng's speech when installed (else a voiced tone), resampled to the requested
rate, so it is never silent and its length grows with the text.

In a test::

    async with run_fake_elevenlabs(api_key="el-test") as fake:
        tts = ElevenLabsTTSService(api_key="el-test", url=fake.url, ...)
        ...
        assert fake.texts == ["Hello there."]

As a process (prints the ``ws://`` URL on stdout once it accepts connections)::

    python -m benchmarks.fakes.elevenlabs_server --port 0 --api-key el-test
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, NoReturn

import numpy as np
import soxr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from benchmarks.fakes.audio import SPEECH_SAMPLE_RATE, SpeechEngine, synthesize
from benchmarks.fakes.server import bind_socket, make_server, serve_asgi, start_serving

__all__ = [
    "ConnectionRecord",
    "ContextRecord",
    "FakeElevenLabs",
    "FakeElevenLabsOptions",
    "run_fake_elevenlabs",
]

MULTI_STREAM_PATH = "/v1/text-to-speech/{voice_id}/multi-stream-input"
PCM_RATES = (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
#: Models the real service refuses on the WebSocket endpoints (HTTP 403 at the handshake).
NO_WEBSOCKET_MODELS = frozenset({"eleven_v3", "eleven_v3_conversational"})
DEFAULT_CHUNK_LENGTH_SCHEDULE = (120, 160, 250, 290)
MAX_CONTEXTS = 5
DEFAULT_INACTIVITY_TIMEOUT = 20.0
MAX_INACTIVITY_TIMEOUT = 180.0
#: The payload of a close frame is at most 125 bytes, 2 of them the code.
MAX_CLOSE_REASON_BYTES = 123
#: A message without ``context_id`` goes to this context.
DEFAULT_CONTEXT = ""
POLICY_VIOLATION = 1008
INVALID_API_KEY = "Invalid API key"
VOICE_SETTINGS_CHANGED = (
    "voice_settings field must be provided in the first message and then either be not "
    "provided or not change."
)


@dataclass
class FakeElevenLabsOptions:
    """How the fake answers. Mutable: a test may change it between connections."""

    #: The key clients must send; ``None`` accepts any non-empty key.
    api_key: str | None = None
    #: ``close``: accept the handshake, then close with 1008 (the real service's way);
    #: ``handshake``: refuse the upgrade with HTTP 403.
    auth_failure: Literal["close", "handshake"] = "close"
    speech_engine: SpeechEngine = "auto"
    #: Seconds from a generation starting to its first audio message (synthesis included).
    first_audio_delay: float = 0.0
    #: Milliseconds of audio per audio message, cut at the nearest character boundary.
    chunk_ms: int = 250
    #: Seconds without a message before the socket is closed; ``None`` honours the
    #: connection's ``inactivity_timeout`` query parameter.
    inactivity_timeout: float | None = None


@dataclass
class ConnectionRecord:
    voice_id: str
    query: dict[str, str]
    authorized: bool = False
    #: The upgrade was answered with HTTP 403 (see ``auth_failure``, and ``eleven_v3``).
    refused: bool = False
    close_code: int | None = None
    close_reason: str = ""


@dataclass
class ContextRecord:
    context_id: str
    voice_settings: dict[str, Any] | None = None
    #: Every ``text`` received for the context, concatenated.
    text: str = ""
    #: The stretches of text spoken, in order, each as one generation.
    generations: list[str] = field(default_factory=list)
    audio_bytes: int = 0
    flushes: int = 0
    closed: bool = False
    final_sent: bool = False


class FakeElevenLabs:
    """The fake's state and Starlette app; :func:`run_fake_elevenlabs` serves it."""

    def __init__(self, options: FakeElevenLabsOptions | None = None) -> None:
        self.options = options or FakeElevenLabsOptions()
        self.connections: list[ConnectionRecord] = []
        self.contexts: list[ContextRecord] = []
        #: Every JSON message received, in arrival order.
        self.messages: list[dict[str, Any]] = []
        #: Every non-blank ``text`` received on an authorized connection, in arrival order.
        self.texts: list[str] = []
        self.keepalives = 0
        self._url = ""
        self.app = Starlette(
            routes=[
                WebSocketRoute(MULTI_STREAM_PATH, self._multi_stream),
                Route("/_fake/report", self._report, methods=["GET"]),
            ]
        )

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``, the ``url`` for pipecat's ``ElevenLabsTTSService``."""
        if not self._url:
            raise RuntimeError("the fake is not serving; use run_fake_elevenlabs()")
        return self._url

    def reset(self) -> None:
        """Forget what was received so far."""
        self.connections.clear()
        self.contexts.clear()
        self.messages.clear()
        self.texts.clear()
        self.keepalives = 0

    def key_is_valid(self, key: str | None) -> bool:
        expected = self.options.api_key
        return bool(key) and (expected is None or key == expected)

    async def _report(self, request: Request) -> Response:
        return JSONResponse(
            {
                "texts": self.texts,
                "keepalives": self.keepalives,
                "connections": [asdict(c) for c in self.connections],
                "contexts": [asdict(c) for c in self.contexts],
            }
        )

    async def _multi_stream(self, websocket: WebSocket) -> None:
        record = ConnectionRecord(
            voice_id=websocket.path_params["voice_id"], query=dict(websocket.query_params)
        )
        self.connections.append(record)
        header_key = websocket.headers.get("xi-api-key")
        model = record.query.get("model_id", "")
        refuse = model in NO_WEBSOCKET_MODELS or (
            header_key is not None
            and not self.key_is_valid(header_key)
            and self.options.auth_failure == "handshake"
        )
        if refuse:
            # Closing before accepting makes uvicorn answer the upgrade with HTTP 403.
            record.refused = True
            await websocket.close(POLICY_VIOLATION)
            return
        await websocket.accept()
        session = _Session(self, websocket, record)
        if header_key is not None and not self.key_is_valid(header_key):
            with suppress(_Closed):
                await session.close(POLICY_VIOLATION, INVALID_API_KEY)
            return
        record.authorized = header_key is not None
        await session.run()


class _Closed(Exception):
    """The session closed the socket; stop reading."""


class _Context:
    """One context of a connection: its text buffer and the task that speaks it."""

    def __init__(self, session: _Session, record: ContextRecord, schedule: list[int]) -> None:
        self.session = session
        self.record = record
        self.buffer = ""
        self.schedule = schedule
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._speak_queue())

    @property
    def context_id(self) -> str:
        return self.record.context_id

    def append(self, text: str, *, auto_mode: bool) -> None:
        self.buffer += text
        if auto_mode:
            if self.buffer.strip():
                self.flush()
            return
        # Without auto mode, text waits until the buffer reaches the chunk length schedule.
        while self.buffer.strip():
            threshold = self.schedule[min(len(self.record.generations), len(self.schedule) - 1)]
            cut = self.buffer.rfind(" ") + 1
            if len(self.buffer) < threshold or cut == 0:
                return
            self._generate(self.buffer[:cut])
            self.buffer = self.buffer[cut:]

    def flush(self) -> None:
        if self.buffer.strip():
            self._generate(self.buffer)
        self.buffer = ""

    def close(self) -> None:
        """Drop unflushed text; what is already generating finishes, then ``isFinal``."""
        self.buffer = ""
        self.record.closed = True
        self.queue.put_nowait(None)

    def _generate(self, text: str) -> None:
        self.record.generations.append(text)
        self.queue.put_nowait(text)

    async def _speak_queue(self) -> None:
        try:
            while (text := await self.queue.get()) is not None:
                await self._speak(text)
        except (RuntimeError, ValueError, OSError) as error:
            # Synthesis failed (e.g. speech_engine="espeak" without espeak-ng installed).
            with suppress(_Closed):
                await self.session.close(1011, f"Generation failed: {error}")
            return
        await self.session.send({"isFinal": True, "contextId": self.context_id})
        self.record.final_sent = True

    async def _speak(self, text: str) -> None:
        options = self.session.fake.options
        loop = asyncio.get_running_loop()
        first_audio_at = loop.time() + options.first_audio_delay
        speed = 1.0
        if self.record.voice_settings and isinstance(
            self.record.voice_settings.get("speed"), int | float
        ):
            speed = float(self.record.voice_settings["speed"])
        pcm = await synthesize(text.strip(), engine=options.speech_engine, speed=speed)
        rate = self.session.sample_rate
        if rate != SPEECH_SAMPLE_RATE:
            samples = soxr.resample(np.frombuffer(pcm, dtype="<i2"), SPEECH_SAMPLE_RATE, rate)
            pcm = np.asarray(samples, dtype="<i2").tobytes()
        await asyncio.sleep(max(0.0, first_audio_at - loop.time()))
        for audio, alignment in _chunks(text, pcm, rate, options.chunk_ms):
            self.record.audio_bytes += len(audio)
            await self.session.send(
                {
                    "audio": base64.b64encode(audio).decode("ascii"),
                    "alignment": alignment,
                    "normalizedAlignment": alignment,
                    "contextId": self.context_id,
                }
            )


class _Session:
    """One WebSocket connection: reads client messages, routes them to contexts."""

    def __init__(
        self, fake: FakeElevenLabs, websocket: WebSocket, record: ConnectionRecord
    ) -> None:
        self.fake = fake
        self.websocket = websocket
        self.record = record
        self.contexts: dict[str, _Context] = {}
        self.closing: set[_Context] = set()
        self._send_lock = asyncio.Lock()
        self._closed = False
        query = record.query
        self.auto_mode = query.get("auto_mode", "false").lower() == "true"
        self.output_format = query.get("output_format", "mp3_44100_128")
        self.sample_rate = _pcm_rate(self.output_format)
        timeout = fake.options.inactivity_timeout
        if timeout is None:
            try:
                timeout = float(query.get("inactivity_timeout", DEFAULT_INACTIVITY_TIMEOUT))
            except ValueError:
                timeout = DEFAULT_INACTIVITY_TIMEOUT
            timeout = min(max(timeout, 1.0), MAX_INACTIVITY_TIMEOUT)
        self.inactivity_timeout = timeout

    async def run(self) -> None:
        try:
            if self.sample_rate == 0:
                await self.close(
                    POLICY_VIOLATION,
                    f"Unsupported output_format {self.output_format!r}: "
                    "the fake serves pcm_8000 to pcm_48000.",
                )
                return
            while True:
                await self._handle(await self._receive())
        except (_Closed, WebSocketDisconnect):
            pass
        finally:
            for context in [*self.contexts.values(), *self.closing]:
                context.task.cancel()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            if self._closed:
                return
            try:
                await self.websocket.send_text(json.dumps(message))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._closed = True

    async def close(self, code: int, reason: str) -> NoReturn:
        reason = reason.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")
        self.record.close_code, self.record.close_reason = code, reason
        for context in [*self.contexts.values(), *self.closing]:
            if context.task is not asyncio.current_task():
                context.task.cancel()
        async with self._send_lock:
            if not self._closed:
                self._closed = True
                with suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await self.websocket.close(code, reason)
        raise _Closed

    async def _receive(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.inactivity_timeout):
                message = await self.websocket.receive()
        except TimeoutError:
            seconds = f"{self.inactivity_timeout:g}"
            await self.close(
                POLICY_VIOLATION,
                f"Have not received a new text input within the timeout of {seconds} seconds. "
                "Streaming input terminated. Please make sure to either feed the input in the "
                'timely manner, or to send the end of input text (empty string "") when done.',
            )
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        try:
            body = json.loads(message.get("text") or "")
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            await self.close(POLICY_VIOLATION, "Invalid message: expected a JSON object.")
        self.fake.messages.append(body)
        return body

    async def _handle(self, message: dict[str, Any]) -> None:
        if not self.record.authorized:
            if not self.fake.key_is_valid(message.get("xi_api_key")):
                await self.close(POLICY_VIOLATION, INVALID_API_KEY)
            self.record.authorized = True
        if message.get("close_socket") is True:
            await self._close_socket()
        context_id = message.get("context_id", DEFAULT_CONTEXT)
        text = message.get("text")
        if not isinstance(context_id, str) or not isinstance(text, str | None):
            await self.close(POLICY_VIOLATION, "Invalid message: bad 'text' or 'context_id'.")
        if message.get("close_context") is True:
            self._close_context(context_id)
            return
        context = self.contexts.get(context_id)
        if context is None:
            if not text:
                # A keep-alive, or a flush, for a context that is not open: nothing to do.
                if text == "":
                    self.fake.keepalives += 1
                return
            context = await self._open_context(context_id, message)
        elif "voice_settings" in message and (
            message["voice_settings"] != context.record.voice_settings
        ):
            await self.close(POLICY_VIOLATION, VOICE_SETTINGS_CHANGED)
        if text == "" and message.get("flush") is not True:
            self.fake.keepalives += 1
        if text:
            context.record.text += text
            if text.strip():
                self.fake.texts.append(text)
            context.append(text, auto_mode=self.auto_mode)
        if message.get("flush") is True:
            context.record.flushes += 1
            context.flush()

    async def _open_context(self, context_id: str, message: dict[str, Any]) -> _Context:
        if len(self.contexts) >= MAX_CONTEXTS:
            await self.close(
                POLICY_VIOLATION,
                f"Maximum number of concurrent contexts ({MAX_CONTEXTS}) exceeded. "
                "Close contexts that are no longer needed.",
            )
        voice_settings = message.get("voice_settings")
        schedule = list(DEFAULT_CHUNK_LENGTH_SCHEDULE)
        config = message.get("generation_config")
        if isinstance(config, dict) and isinstance(config.get("chunk_length_schedule"), list):
            requested = config["chunk_length_schedule"]
            if not requested or not all(
                isinstance(n, int | float) and 50 <= n <= 500 for n in requested
            ):
                await self.close(
                    POLICY_VIOLATION, "chunk_length_schedule items must be between 50 and 500."
                )
            schedule = [int(n) for n in requested]
        record = ContextRecord(
            context_id, voice_settings if isinstance(voice_settings, dict) else None
        )
        self.fake.contexts.append(record)
        context = _Context(self, record, schedule)
        self.contexts[context_id] = context
        return context

    def _close_context(self, context_id: str) -> None:
        context = self.contexts.pop(context_id, None)
        if context is None:
            return
        context.close()
        # The ID may be reused at once for a new, unrelated context; this one finishes aside.
        self.closing.add(context)
        context.task.add_done_callback(lambda _: self.closing.discard(context))

    async def _close_socket(self) -> None:
        for context_id in list(self.contexts):
            self._close_context(context_id)
        pending = [context.task for context in self.closing]
        if pending:
            await asyncio.wait(pending)
        await self.close(1000, "")


def _pcm_rate(output_format: str) -> int:
    """The sample rate of a ``pcm_<rate>`` format, or 0 for formats the fake does not serve."""
    prefix, _, rate = output_format.partition("_")
    if prefix == "pcm" and rate.isdigit() and int(rate) in PCM_RATES:
        return int(rate)
    return 0


def _chunks(
    text: str, pcm: bytes, sample_rate: int, chunk_ms: int
) -> list[tuple[bytes, dict[str, list[Any]]]]:
    """Split ``pcm`` into audio messages, each with the timings of the characters it carries.

    The characters of ``text`` share the audio evenly. A chunk ends on a character boundary,
    so each message's character times start at zero and end where its audio ends.
    """
    samples = len(pcm) // 2
    total_ms = samples * 1000 / sample_rate
    n = len(text)
    bounds = [round(k * total_ms / n) for k in range(n + 1)]
    out: list[tuple[bytes, dict[str, list[Any]]]] = []
    start = 0
    while start < n:
        end = start + 1
        while end < n and bounds[end] - bounds[start] < chunk_ms:
            end += 1
        first = round(bounds[start] * sample_rate / 1000) if start else 0
        last = samples if end == n else round(bounds[end] * sample_rate / 1000)
        alignment: dict[str, list[Any]] = {
            "chars": list(text[start:end]),
            "charStartTimesMs": [bounds[k] - bounds[start] for k in range(start, end)],
            "charDurationsMs": [bounds[k + 1] - bounds[k] for k in range(start, end)],
        }
        out.append((pcm[2 * first : 2 * last], alignment))
        start = end
    return out


@asynccontextmanager
async def run_fake_elevenlabs(
    options: FakeElevenLabsOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **overrides: Any,
) -> AsyncIterator[FakeElevenLabs]:
    """Serve a :class:`FakeElevenLabs` on ``host:port`` (0 = a free port) for the block.

    Keyword ``overrides`` set :class:`FakeElevenLabsOptions` fields, e.g.
    ``run_fake_elevenlabs(api_key="el-test", first_audio_delay=0.2)``.
    """
    fake = FakeElevenLabs(replace(options or FakeElevenLabsOptions(), **overrides))
    async with serve_asgi(fake.app, host, port, websockets=True) as (bound_host, bound_port):
        fake._url = f"ws://{bound_host}:{bound_port}"
        try:
            yield fake
        finally:
            fake._url = ""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fakes.elevenlabs_server",
        description="Fake ElevenLabs multi-context TTS WebSocket; prints its URL when ready.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--api-key", default=None, help="the key to require (default: any)")
    parser.add_argument("--auth-failure", default="close", choices=["close", "handshake"])
    parser.add_argument("--speech-engine", default="auto", choices=["auto", "espeak", "tone"])
    parser.add_argument("--first-audio-delay", type=float, default=0.0, metavar="SECS")
    parser.add_argument("--chunk-ms", type=int, default=FakeElevenLabsOptions.chunk_ms)
    parser.add_argument("--inactivity-timeout", type=float, default=None, metavar="SECS")
    return parser.parse_args(argv)


async def _serve_forever(args: argparse.Namespace) -> None:
    options = FakeElevenLabsOptions(
        **{f.name: getattr(args, f.name) for f in fields(FakeElevenLabsOptions)}
    )
    fake = FakeElevenLabs(options)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    fake._url = f"ws://{host}:{port}"
    server = make_server(
        fake.app, log_level=args.log_level, configure_logging=True, websockets=True
    )
    # As in benchmarks.fakes.openai_server: let SIGINT/SIGTERM stop uvicorn gracefully, status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.handle_exit)
    try:
        task = await start_serving(server, sock)
        print(fake.url, flush=True)
        await task
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.fakes.elevenlabs_server``."""
    asyncio.run(_serve_forever(_parse_args(argv)))


if __name__ == "__main__":
    main()
