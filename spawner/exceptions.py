"""Errors of the spawner's call handling, carried to the control API's JSON replies."""

from __future__ import annotations

from common.errors import ApiError

__all__ = ["CallError"]


class CallError(ApiError):
    """A request about a call cannot be served; ``status`` is the HTTP status to answer.

    The same shape as signaling's errors, so signaling can pass it on to the client as is.
    """
