"""The JSON error shape of every voicebots HTTP API: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import math
from collections.abc import Mapping

from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_response"]


class ApiError(Exception):
    """Raised by a handler to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message, self.retry_after, self.headers)


def error_response(
    status: int,
    code: str,
    message: str,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    all_headers = dict(headers or {})
    if retry_after:
        # Rounded up: a client retrying at the announced second must not be refused again.
        all_headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers=all_headers or None,
    )
