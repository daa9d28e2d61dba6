"""OpenAI API payloads for the fake server: errors, replies, chat chunks, transcriptions.

Shapes follow the API reference and what the ``openai`` package parses; values are
deterministic so tests can assert on them.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from starlette.responses import JSONResponse

__all__ = [
    "DEFAULT_TRANSCRIPT",
    "WEATHER_REPLY",
    "ApiError",
    "chat_chunks",
    "chat_completion",
    "default_reply",
    "message_text",
    "token_usage",
    "tokens",
    "tool_call_chunks",
    "tool_call_completion",
    "tool_result_text",
    "transcription_body",
]

DEFAULT_TRANSCRIPT = "what is the weather like today"
WEATHER_REPLY = "It is sunny and warm today."
#: Characters of a function call's arguments per streamed chunk.
TOOL_ARGUMENT_PIECE = 7


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type

    def response(self) -> JSONResponse:
        error = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        return JSONResponse({"error": error}, status_code=self.status)


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def tool_result_text(content: str) -> str:
    """What a tool message's ``content`` says, in words a voice can speak.

    pipecat sends a function's result JSON-encoded: a string result is unquoted, an object's
    ``confirmation`` (the fake's own convention for a booking) is picked out, and anything
    else is said as sent.
    """
    try:
        value = json.loads(content)
    except ValueError:
        return content
    if isinstance(value, dict) and "confirmation" in value:
        value = value["confirmation"]
    return value if isinstance(value, str) else content


def default_reply(messages: list[dict[str, Any]]) -> str:
    """The deterministic reply to a conversation.

    A conversation whose last message is a tool result gets ``"Your table is booked,
    confirmation <result>."`` (see :func:`tool_result_text`), so a test can hear the result
    spoken. A system (or developer) prompt asking to summarize gets ``"Summary: ..."`` quoting
    the last user message's first line labelled ``Caller:`` or ``User:`` (else its first
    line); a question about the weather gets
    ``"It is sunny and warm today."``; anything else is echoed back as ``"You said: ..."``.
    """
    if messages and messages[-1].get("role") == "tool":
        result = tool_result_text(message_text(messages[-1])).strip().rstrip(".")
        return f"Your table is booked, confirmation {result}."
    system = " ".join(message_text(m) for m in messages if m.get("role") in ("system", "developer"))
    users = [message_text(m).strip() for m in messages if m.get("role") == "user"]
    last_user = next((text for text in reversed(users) if text), "")
    if "summar" in system.lower():
        lines = [line.strip() for line in last_user.splitlines() if line.strip()]
        caller = [line for line in lines if re.match(r"(?i)(caller|user):", line)]
        first_line = (caller or lines or [""])[0]
        # Drop the speaker label a summarizer puts in front of each transcript line.
        said = re.sub(r"^\w+:\s*", "", first_line).strip().rstrip(".")
        return f'Summary: the caller said "{said}".' if said else "Summary: nothing was said."
    if "weather" in last_user.lower():
        return WEATHER_REPLY
    if not last_user:
        return "Hello! How can I help you?"
    return f"You said: {last_user.rstrip('.')}."


def tokens(text: str) -> list[str]:
    """Word-sized pieces that concatenate back to ``text`` (the fake's notion of a token)."""
    return re.findall(r"\S+\s*", text) or [text]


def chat_completion(
    completion_id: str, model: str, reply: str, usage: dict[str, Any]
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply,
        "refusal": None,
        "annotations": [],
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage,
    }


def transcription_body(
    fmt: str, text: str, duration: float, include_logprobs: bool
) -> dict[str, Any] | str:
    """The answer to a transcription in ``response_format`` ``fmt`` (JSON object or text)."""
    if fmt == "json":
        body: dict[str, Any] = {"text": text, "usage": _duration_usage(duration)}
        if include_logprobs:
            body["logprobs"] = [
                {"token": token, "logprob": -0.01, "bytes": list(token.encode())}
                for token in tokens(text)
            ]
        return body
    if fmt == "verbose_json":
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": duration,
            "text": f" {text}",
            "tokens": list(range(len(tokens(text)))),
            "temperature": 0.0,
            "avg_logprob": -0.1,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.01,
        }
        return {
            "task": "transcribe",
            "language": "english",
            "duration": duration,
            "text": text,
            "segments": [segment],
            "usage": _duration_usage(duration),
        }
    if fmt == "text":
        return f"{text}\n"
    if fmt in ("srt", "vtt"):
        return _subtitles(fmt, text, duration)
    raise ApiError(
        400, f"Unsupported response_format {fmt!r} for the fake.", param="response_format"
    )


def _duration_usage(seconds: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(seconds, 3)}


def token_usage(prompt: int, completion: int) -> dict[str, Any]:
    """A chat completion's ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chunk_maker(
    completion_id: str, model: str, *, with_usage: bool
) -> Callable[[dict[str, Any], str | None], dict[str, Any]]:
    """Builds the ``chat.completion.chunk`` objects of one streamed completion."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if with_usage:
            # With include_usage the API sends "usage": null on every chunk but the last.
            data["usage"] = None
        return data

    return chunk


def chat_chunks(
    completion_id: str, model: str, reply: str, usage: dict[str, Any] | None
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects streaming ``reply``: a role chunk, one chunk per
    token, a ``stop`` chunk, then (when ``usage`` is given) a usage chunk with no choices."""
    chunk = _chunk_maker(completion_id, model, with_usage=usage is not None)
    yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
    for token in tokens(reply):
        yield chunk({"content": token}, None)
    yield chunk({}, "stop")
    if usage is not None:
        last = chunk({}, None)
        last.update(choices=[], usage=usage)
        yield last


def tool_call_chunks(
    completion_id: str,
    model: str,
    call_id: str,
    name: str,
    arguments: str,
    usage: dict[str, Any] | None,
) -> Iterator[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed function call, as OpenAI sends
    them: the first delta carries the role and the call's ``index``, ``id``, ``type`` and
    function ``name`` with empty ``arguments``; the arguments follow in small pieces under the
    same ``index``; the last choice chunk has ``finish_reason`` ``tool_calls``; then (when
    ``usage`` is given) a usage chunk with no choices."""
    chunk = _chunk_maker(completion_id, model, with_usage=usage is not None)
    head = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    yield chunk({"role": "assistant", "content": None, "tool_calls": [head]}, None)
    # The API streams arguments a few characters at a time; clients must join the pieces.
    for start in range(0, len(arguments), TOOL_ARGUMENT_PIECE):
        piece = arguments[start : start + TOOL_ARGUMENT_PIECE]
        yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
    yield chunk({}, "tool_calls")
    if usage is not None:
        last = chunk({}, None)
        last.update(choices=[], usage=usage)
        yield last


def tool_call_completion(
    completion_id: str,
    model: str,
    call_id: str,
    name: str,
    arguments: str,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` whose message is one function call."""
    body = chat_completion(completion_id, model, "", usage)
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    body["choices"][0]["message"].update(content=None, tool_calls=[call])
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


def _subtitles(fmt: str, text: str, duration: float) -> str:
    end = max(duration, 0.001)
    stamp = f"{int(end // 3600):02}:{int(end % 3600 // 60):02}:{end % 60:06.3f}"
    if fmt == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> {stamp}\n{text}\n\n"
    return f"1\n00:00:00,000 --> {stamp.replace('.', ',')}\n{text}\n\n"
