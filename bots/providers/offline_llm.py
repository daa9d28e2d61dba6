"""Offline LLM: a deterministic script that echoes what the user said, no key, no network.

It stands in for a real model so a bot can hold a (dull) conversation with no API key,
and so tests can predict every reply exactly.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings

__all__ = ["NO_INPUT_REPLY", "ScriptedLLMService", "last_user_text", "scripted_reply"]

#: The reply when there is no user text to echo.
NO_INPUT_REPLY = "Sorry, I did not catch that."

_WORDS_PER_CHUNK = 3
# Trailing punctuation is dropped from the echo so the reply ends with exactly one period.
_TRAILING_PUNCTUATION = re.compile(r"[\s.,;:!?…]+$")


def scripted_reply(user_text: str) -> str:
    """The scripted bot's whole reply to one user utterance.

    Args:
        user_text: What the user said, as transcribed.

    Returns:
        ``"You said: <text>."``, or :data:`NO_INPUT_REPLY` if there is no text.
    """
    text = _TRAILING_PUNCTUATION.sub("", " ".join(user_text.split()))
    if not text:
        return NO_INPUT_REPLY
    return f"You said: {text}."


def last_user_text(context: LLMContext) -> str:
    """The text of the user message the context is waiting for a reply to.

    Only a user message after the last assistant message counts: a context that
    ends with the bot's own words (or holds none of the user's) has nothing to echo.

    Args:
        context: The conversation, as pipecat's universal ``LLMContext``.

    Returns:
        That message's text, or ``""``.
    """
    for message in reversed(context.get_messages()):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant":
            return ""
        if role == "user":
            return standard_message_text(message).strip()
    return ""


def _chunks(reply: str, words_per_chunk: int) -> list[str]:
    # LLMTextFrames carry their own spacing, so the chunks concatenate to the reply.
    words = reply.split(" ")
    return [
        " ".join(words[i : i + words_per_chunk]) + (" " if i + words_per_chunk < len(words) else "")
        for i in range(0, len(words), words_per_chunk)
    ]


class ScriptedLLMService(LLMService):
    """An LLM service that answers every context with :func:`scripted_reply`.

    Like pipecat's OpenAI service, each ``LLMContextFrame`` yields
    ``LLMFullResponseStartFrame``, the reply as a few ``LLMTextFrame`` chunks, then
    ``LLMFullResponseEndFrame``. A reply runs in the frame-processing task, which
    pipecat cancels on an ``InterruptionFrame``; the end frame is still pushed, so
    downstream aggregators close the (cut-short) response. Tools are never called,
    and every user turn counts as complete (no turn-completion markers).
    """

    def __init__(
        self,
        *,
        words_per_chunk: int = _WORDS_PER_CHUNK,
        chunk_delay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """Create the service.

        Args:
            words_per_chunk: Words per ``LLMTextFrame``.
            chunk_delay: Seconds to wait before each chunk, to mimic a model's token
                stream (tests use it to interrupt a reply midway). Even at 0 the
                service yields to the event loop between chunks.
            **kwargs: Passed to ``LLMService``.
        """
        if words_per_chunk < 1:
            raise ValueError("words_per_chunk must be at least 1")
        settings = LLMSettings(
            model="scripted",
            system_instruction=None,
            temperature=None,
            max_tokens=None,
            top_p=None,
            top_k=None,
            frequency_penalty=None,
            presence_penalty=None,
            seed=None,
            filter_incomplete_user_turns=False,
            user_turn_completion_config=None,
        )
        super().__init__(settings=settings, **kwargs)
        self._words_per_chunk = words_per_chunk
        self._chunk_delay = chunk_delay

    def can_generate_metrics(self) -> bool:
        """Report TTFB and processing metrics, like a real LLM service."""
        return True

    async def run_inference(
        self,
        context: LLMContext,
        max_tokens: int | None = None,
        system_instruction: str | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> str | None:
        """Answer a context out of band (e.g. pipecat's context summarisation).

        Args:
            context: The conversation.
            max_tokens: Ignored.
            system_instruction: Ignored.
            response_schema: Ignored; the reply is never JSON.

        Returns:
            :func:`scripted_reply` to the context's last user message.
        """
        return scripted_reply(last_user_text(context))

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Reply to ``LLMContextFrame``; pass every other frame on.

        Args:
            frame: The frame to process.
            direction: Which way it travels.
        """
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._reply(frame.context)
        else:
            await self.push_frame(frame, direction)

    async def _reply(self, context: LLMContext) -> None:
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        try:
            for chunk in _chunks(scripted_reply(last_user_text(context)), self._words_per_chunk):
                # Also the point where an interruption cancels the reply.
                await asyncio.sleep(self._chunk_delay)
                await self.stop_ttfb_metrics()
                await self.stop_ttfat_metrics()
                # Pushed directly, not through _push_llm_text: with turn-completion
                # filtering on, that would hold back text lacking the model's markers.
                await self.push_frame(LLMTextFrame(chunk))
        finally:
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())
