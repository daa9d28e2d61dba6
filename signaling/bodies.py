"""Request bodies of the public API: bounded, JSON, and safe to pass on.

Whatever is accepted here is re-encoded as JSON towards the spawner and the bots, so what
cannot be (``NaN``, lone surrogates) or would be costly to (very deep nesting) is refused
here, with a 4xx naming the problem.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from common.errors import ApiError

__all__ = ["MAX_JSON_DEPTH", "read_json"]

#: Deep enough for any request_data a page sends; shallow enough to walk without recursion.
MAX_JSON_DEPTH = 32


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request, limit: int, *, optional: bool = False) -> Any:
    """The body as JSON; ``{}`` for an empty one if ``optional``.

    413 past ``limit`` bytes (before reading it all), 415 for a non-JSON content type,
    400 (``ValueError``) for a body that is not acceptable JSON.
    """
    content_type = request.headers.get("content-type", "")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
    if not body:
        if optional:
            return {}
        raise ValueError("request body is empty; expected a JSON object")
    if content_type and not content_type.split(";")[0].strip().lower().endswith("json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError(f"body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise ValueError("body is not valid JSON: it is not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, NaN, integers of more than 4300 digits
        raise ValueError(f"body is not valid JSON: {exc}") from None
    _check_value(value)
    return value


def _check_value(value: Any) -> None:
    """Refuses nesting deeper than :data:`MAX_JSON_DEPTH` and strings that are not Unicode
    text (JSON's ``\\ud800`` escapes decode to lone surrogates, which cannot be sent on)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"body nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("body is not valid JSON text: a string has a lone surrogate") from None
