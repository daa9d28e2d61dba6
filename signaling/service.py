"""Runs the signaling app on uvicorn."""

from __future__ import annotations

import uvicorn

from signaling.app import build_app
from signaling.config import SignalingConfig

__all__ = ["run_signaling"]


def run_signaling(config: SignalingConfig) -> None:
    uvicorn.run(
        build_app(config),
        host=config.host,
        port=config.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        # A stopping signaling server lets in-flight offers finish; live calls are not its.
        timeout_graceful_shutdown=10,
    )
