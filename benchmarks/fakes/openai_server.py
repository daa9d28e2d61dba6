"""A fake OpenAI-compatible API on loopback: transcription, chat completions, speech.

It speaks the wire protocol the ``openai`` package and pipecat's OpenAI STT/LLM/TTS services
use, so tests point the real clients at it with ``base_url``:

- ``POST /v1/audio/transcriptions`` (multipart) answers the configured transcript, in the
  requested ``response_format`` (``json`` with optional logprobs, ``verbose_json``, ``text``,
  ``srt``, ``vtt``).
- ``POST /v1/chat/completions`` answers a deterministic reply (see :func:`default_reply`),
  streamed as ``chat.completion.chunk`` server-sent events ending with ``data: [DONE]`` (plus a
  usage chunk when ``stream_options.include_usage`` is set), or as one ``chat.completion``.
  With :attr:`FakeOpenAIOptions.tool_call` set, a request that declares that tool and whose
  last message is the user's asking for it (``tool_call_when``) is answered with the function
  call instead, in OpenAI's ``tool_calls`` format; the request after it, ending with the
  ``tool`` message, is answered with text quoting the result.
- ``POST /v1/audio/speech`` streams 24 kHz mono s16le speech (``pcm``) or a WAV file (``wav``).
- Malformed requests get OpenAI's error JSON with status 400; unknown paths 404.
- ``GET /_fake/requests`` reports what was received, for tests that run the fake as a process.

In a test::

    async with run_fake_openai(first_token_delay=0.05) as fake:
        client = AsyncOpenAI(base_url=fake.base_url, api_key="test")
        ...
        assert fake.requests["/v1/chat/completions"] == 1

As a process (prints the base URL on stdout once it accepts connections)::

    python -m benchmarks.fakes.openai_server --port 0 --first-token-delay 0.1
    python -m benchmarks.fakes.openai_server --tool-call book_table '{"name": "Ann"}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from itertools import count
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from benchmarks.fakes.audio import (
    SPEECH_SAMPLE_RATE,
    SpeechEngine,
    parse_wav,
    synthesize,
    wav_bytes,
)
from benchmarks.fakes.multipart import parse_form_data
from benchmarks.fakes.openai_payloads import (
    DEFAULT_TRANSCRIPT,
    ApiError,
    chat_chunks,
    chat_completion,
    default_reply,
    message_text,
    token_usage,
    tokens,
    tool_call_chunks,
    tool_call_completion,
    transcription_body,
)
from benchmarks.fakes.server import bind_socket, make_server, serve_asgi, start_serving

__all__ = [
    "DEFAULT_TRANSCRIPT",
    "FakeOpenAI",
    "FakeOpenAIOptions",
    "TranscriptionRequest",
    "default_reply",
    "run_fake_openai",
]

TRANSCRIPTIONS = "/v1/audio/transcriptions"
CHAT = "/v1/chat/completions"
SPEECH = "/v1/audio/speech"
MODELS = "/v1/models"
#: Bytes per streamed speech chunk: 100 ms of 24 kHz s16le.
SPEECH_CHUNK_BYTES = 4_800
MAX_SPEECH_INPUT = 4_096


@dataclass
class FakeOpenAIOptions:
    """How the fake answers. Mutable: a test may change it between requests."""

    transcript: str = DEFAULT_TRANSCRIPT
    #: Fixed chat reply; ``None`` derives one from the request (:func:`default_reply`).
    reply: str | None = None
    #: Seconds before the first chat chunk (or the whole non-streamed reply).
    first_token_delay: float = 0.0
    #: Seconds between streamed chat chunks.
    token_delay: float = 0.0
    #: Seconds before a transcription answer.
    transcription_delay: float = 0.0
    #: Seconds from a speech request to its first audio byte (synthesis time included).
    speech_first_byte_delay: float = 0.0
    speech_engine: SpeechEngine = "auto"
    #: When set, requests must carry ``Authorization: Bearer <api_key>`` (else 401).
    api_key: str | None = None
    #: A function call to answer with, ``(name, arguments as JSON)``: given to a chat request
    #: that declares a tool of that name (``tool_choice`` not ``"none"``) and whose last
    #: message is the user's, matching ``tool_call_when``.
    tool_call: tuple[str, str] | None = None
    #: Regular expression searched (ignoring case) in that last user message.
    tool_call_when: str = r"\bbook|\btable\b"


@dataclass(frozen=True)
class TranscriptionRequest:
    fields: dict[str, list[str]]
    filename: str
    audio_bytes: int
    #: Seconds of audio, when the upload is a 16-bit PCM WAV file (0.0 otherwise).
    audio_duration: float


class FakeOpenAI:
    """The fake's state and Starlette app; :func:`run_fake_openai` serves it."""

    def __init__(self, options: FakeOpenAIOptions | None = None) -> None:
        self.options = options or FakeOpenAIOptions()
        #: Requests received per path, including rejected ones.
        self.requests: Counter[str] = Counter()
        self.chat_requests: list[dict[str, Any]] = []
        self.transcriptions: list[TranscriptionRequest] = []
        self.speech_requests: list[dict[str, Any]] = []
        #: Chat requests answered with a function call rather than text.
        self.tool_calls = 0
        self._base_url = ""
        self._ids = count(1)
        self.app = Starlette(
            routes=[
                Route(TRANSCRIPTIONS, self._guard(self._transcribe), methods=["POST"]),
                Route(CHAT, self._guard(self._chat), methods=["POST"]),
                Route(SPEECH, self._guard(self._speech), methods=["POST"]),
                Route(MODELS, self._guard(self._models), methods=["GET"]),
                Route("/_fake/requests", self._report, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the ``base_url`` for OpenAI clients."""
        if not self._base_url:
            raise RuntimeError("the fake is not serving; use run_fake_openai()")
        return self._base_url

    @property
    def chat_messages(self) -> list[list[dict[str, Any]]]:
        """The ``messages`` of every chat request, in arrival order."""
        return [body.get("messages", []) for body in self.chat_requests]

    @property
    def speech_inputs(self) -> list[str]:
        return [str(body.get("input", "")) for body in self.speech_requests]

    def reset(self) -> None:
        """Forget the requests received so far."""
        self.requests.clear()
        self.chat_requests.clear()
        self.transcriptions.clear()
        self.speech_requests.clear()
        self.tool_calls = 0

    def _guard(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.requests[request.url.path] += 1
            try:
                self._check_auth(request)
                return await handler(request)
            except ApiError as error:
                return error.response()

        return endpoint

    async def _models(self, _request: Request) -> Response:
        models = ("gpt-4o-mini", "gpt-4o-mini-transcribe", "gpt-4o-mini-tts", "whisper-1")
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": model, "object": "model", "created": 0, "owned_by": "fake"}
                    for model in models
                ],
            }
        )

    def _check_auth(self, request: Request) -> None:
        expected = self.options.api_key
        if expected is not None and request.headers.get("authorization") != f"Bearer {expected}":
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
            return ApiError(404, message, code="unknown_url").response()
        return ApiError(exc.status_code, str(exc.detail)).response()

    async def _report(self, request: Request) -> Response:
        return JSONResponse(
            {
                "requests": dict(self.requests),
                "chat_messages": self.chat_messages,
                "speech_inputs": self.speech_inputs,
                "transcriptions": len(self.transcriptions),
                "tool_calls": self.tool_calls,
            }
        )

    async def _transcribe(self, request: Request) -> Response:
        try:
            form = parse_form_data(request.headers.get("content-type", ""), await request.body())
        except ValueError as error:
            raise ApiError(400, f"Invalid multipart body: {error}") from None
        upload = form.files.get("file")
        if upload is None or not upload.data:
            raise ApiError(400, "Missing or empty required parameter: 'file'.", param="file")
        model = form.get("model")
        if not model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        if form.get("stream", "false") == "true":
            raise ApiError(400, "The fake does not stream transcriptions.", param="stream")
        try:
            duration = parse_wav(upload.data).duration
        except ValueError:
            duration = 0.0
        self.transcriptions.append(
            TranscriptionRequest(form.fields, upload.filename, len(upload.data), duration)
        )
        await asyncio.sleep(self.options.transcription_delay)
        fmt = form.get("response_format") or "json"
        include_logprobs = "logprobs" in form.get_list("include")
        body = transcription_body(fmt, self.options.transcript, duration, include_logprobs)
        return JSONResponse(body) if isinstance(body, dict) else PlainTextResponse(body)

    async def _chat(self, request: Request) -> Response:
        body = await _json_object(request)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "Missing required parameter: 'messages'.", param="messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ApiError(
                    400, f"Invalid message at index {i}: needs a 'role'.", param=f"messages.[{i}]"
                )
        tools = body.get("tools")
        if tools is not None and not isinstance(tools, list):
            raise ApiError(400, "'tools' must be an array.", param="tools")
        self.chat_requests.append(body)
        options = self.options
        call = self._tool_call(body, messages)
        if call is not None:
            self.tool_calls += 1
            answer = call[1]
        else:
            answer = options.reply if options.reply is not None else default_reply(messages)
        prompt_tokens = sum(len(tokens(message_text(m))) for m in messages)
        usage = token_usage(prompt_tokens, len(tokens(answer)))
        n = next(self._ids)
        completion_id = f"chatcmpl-fake{n}"
        call_id = f"call_fake{n}"
        if body.get("stream") is True:
            stream_options = body.get("stream_options") or {}
            include_usage = isinstance(stream_options, dict) and bool(
                stream_options.get("include_usage")
            )
            streamed_usage = usage if include_usage else None
            if call is not None:
                chunks = tool_call_chunks(
                    completion_id, model, call_id, call[0], call[1], streamed_usage
                )
            else:
                chunks = chat_chunks(completion_id, model, answer, streamed_usage)
            return StreamingResponse(
                self._sse(chunks, options.first_token_delay, options.token_delay),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        await asyncio.sleep(options.first_token_delay)
        if call is not None:
            return JSONResponse(
                tool_call_completion(completion_id, model, call_id, call[0], call[1], usage)
            )
        return JSONResponse(chat_completion(completion_id, model, answer, usage))

    def _tool_call(
        self, body: dict[str, Any], messages: list[dict[str, Any]]
    ) -> tuple[str, str] | None:
        """The configured function call, if this request is one to answer with it."""
        call = self.options.tool_call
        if call is None or body.get("tool_choice") == "none":
            return None
        declared = {
            tool["function"].get("name")
            for tool in body.get("tools") or []
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
        }
        last = messages[-1]
        # Only a fresh user request: the turn after the tool's result is answered in words.
        if call[0] not in declared or last.get("role") != "user":
            return None
        if not re.search(self.options.tool_call_when, message_text(last), re.IGNORECASE):
            return None
        return call

    async def _sse(
        self, chunks: Iterator[dict[str, Any]], first_delay: float, delay: float
    ) -> AsyncIterator[bytes]:
        await asyncio.sleep(first_delay)
        for i, chunk in enumerate(chunks):
            if i > 1:  # chunk 0 carries the role, chunk 1 the first token
                await asyncio.sleep(delay)
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def _speech(self, request: Request) -> Response:
        body = await _json_object(request)
        for name in ("model", "input"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise ApiError(400, f"Missing required parameter: '{name}'.", param=name)
        if len(body["input"]) > MAX_SPEECH_INPUT:
            raise ApiError(400, f"'input' is longer than {MAX_SPEECH_INPUT} characters.")
        voice = body.get("voice")
        if not (isinstance(voice, str) and voice) and not (
            isinstance(voice, dict) and isinstance(voice.get("id"), str)
        ):
            raise ApiError(400, "Missing required parameter: 'voice'.", param="voice")
        fmt = body.get("response_format", "mp3")
        if fmt not in ("pcm", "wav"):
            raise ApiError(
                400,
                f"Unsupported response_format {fmt!r}: the fake serves 'pcm' and 'wav'.",
                param="response_format",
            )
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise ApiError(400, "'speed' must be a number from 0.25 to 4.0.", param="speed")
        self.speech_requests.append(body)
        stream = self._speech_stream(body["input"], fmt, float(speed))
        return StreamingResponse(stream, media_type="audio/wav" if fmt == "wav" else "audio/pcm")

    async def _speech_stream(self, text: str, fmt: str, speed: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        # Synthesis counts toward the first-byte delay, as a real server's compute would.
        first_byte_at = loop.time() + self.options.speech_first_byte_delay
        audio = await synthesize(text, engine=self.options.speech_engine, speed=speed)
        if fmt == "wav":
            audio = wav_bytes(audio, SPEECH_SAMPLE_RATE)
        await asyncio.sleep(max(0.0, first_byte_at - loop.time()))
        for start in range(0, len(audio), SPEECH_CHUNK_BYTES):
            yield audio[start : start + SPEECH_CHUNK_BYTES]


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


@asynccontextmanager
async def run_fake_openai(
    options: FakeOpenAIOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **overrides: Any,
) -> AsyncIterator[FakeOpenAI]:
    """Serve a :class:`FakeOpenAI` on ``host:port`` (0 = a free port) for the block.

    Keyword ``overrides`` set :class:`FakeOpenAIOptions` fields, e.g.
    ``run_fake_openai(transcript="hi", first_token_delay=0.2)``.
    """
    fake = FakeOpenAI(replace(options or FakeOpenAIOptions(), **overrides))
    async with serve_asgi(fake.app, host, port) as (bound_host, bound_port):
        fake._base_url = f"http://{bound_host}:{bound_port}/v1"
        try:
            yield fake
        finally:
            fake._base_url = ""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fakes.openai_server",
        description="Fake OpenAI-compatible API on loopback; prints its base URL when ready.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--log-level", default="warning")
    defaults = FakeOpenAIOptions()
    for option in fields(FakeOpenAIOptions):
        flag = "--" + option.name.replace("_", "-")
        default = getattr(defaults, option.name)
        if option.name == "speech_engine":
            parser.add_argument(flag, default=default, choices=["auto", "espeak", "tone"])
        elif option.name == "tool_call":
            parser.add_argument(flag, nargs=2, default=default, metavar=("NAME", "ARGS_JSON"))
        elif isinstance(default, float):
            parser.add_argument(flag, type=float, default=default, metavar="SECS")
        else:
            parser.add_argument(flag, default=default)
    args = parser.parse_args(argv)
    if args.tool_call is not None:
        name, arguments = args.tool_call
        try:
            json.loads(arguments)
        except ValueError:
            parser.error(f"--tool-call: the arguments are not JSON: {arguments!r}")
        args.tool_call = (name, arguments)
    return args


async def _serve_forever(args: argparse.Namespace) -> None:
    options = FakeOpenAIOptions(
        **{f.name: getattr(args, f.name) for f in fields(FakeOpenAIOptions)}
    )
    fake = FakeOpenAI(options)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    fake._base_url = f"http://{host}:{port}/v1"
    server = make_server(fake.app, log_level=args.log_level, configure_logging=True)
    # serve() stops gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler found
    # before it started. Making that handler uvicorn's own flag-setter lets a graceful stop
    # exit with status 0, and also covers a signal arriving before serve() takes over.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.handle_exit)
    try:
        task = await start_serving(server, sock)
        print(fake.base_url, flush=True)
        await task
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m benchmarks.fakes.openai_server``."""
    asyncio.run(_serve_forever(_parse_args(argv)))


if __name__ == "__main__":
    main()
