"""Call summaries: one chat completion with an OpenAI-compatible LLM, or an offline extract.

The offline summary needs no model and is deterministic: the caller's first real request, the
assistant's answer to it, the other caller line that best matches the call's recurring words,
and the call's shape (turns, duration, how it ended).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from openai import OpenAI

from bots.config import ProviderConfig
from common.record import CallRecord, TranscriptLine

__all__ = [
    "EMPTY_CALL_SUMMARY",
    "SUMMARY_SYSTEM_PROMPT",
    "extractive_summary",
    "format_transcript",
    "llm_summary",
]

SUMMARY_SYSTEM_PROMPT = (
    "You summarize phone calls between a caller and a voice assistant. Write a summary of two "
    "or three plain sentences: what the caller wanted, what the assistant answered or did, "
    "and anything left unresolved. No lists, no markdown."
)
EMPTY_CALL_SUMMARY = "No conversation: the call ended before anything was said."
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
QUOTE_CHARS = 160

_WORD = re.compile(r"[a-z0-9']+")
# Words that carry no topic; without them word frequency points at what the call was about.
_STOPWORDS = frozenset(
    """a about am an and any are as at be been but by can could did do does for from get go
    had has have hello hey hi how i i'd i'm if in is it it's just know let like me my no not
    now of oh ok okay on or our please so sure than thank thanks that the their them then there
    they this to uh um up us want was we well were what when where which who why will with
    would yeah yes you you're your""".split()
)


def format_transcript(lines: Sequence[TranscriptLine]) -> str:
    """The transcript as ``Caller: ...`` / ``Assistant: ...`` lines, for an LLM prompt."""
    speaker = {"user": "Caller", "assistant": "Assistant"}
    return "\n".join(f"{speaker[line.role]}: {line.text.strip()}" for line in lines if line.text)


def llm_summary(providers: ProviderConfig, record: CallRecord, *, timeout: float = 60.0) -> str:
    """Summarize with one chat completion on ``providers``' OpenAI-compatible endpoint.

    Raises ``openai.OpenAIError`` when the endpoint fails (after the client's own retries)
    and ``ValueError`` when it answers with no text.
    """
    if not any(line.text.strip() for line in record.transcript):
        return EMPTY_CALL_SUMMARY
    with OpenAI(
        api_key=providers.openai_client_key,
        # Explicit, so the client never falls back to reading the environment itself.
        base_url=providers.openai_base_url or DEFAULT_OPENAI_URL,
        timeout=timeout,
        max_retries=2,
    ) as client:
        completion = client.chat.completions.create(
            model=providers.openai_llm_model,
            messages=[
                {"role": "system", "content": SUMMARY_SYSTEM_PROMPT},
                {"role": "user", "content": format_transcript(record.transcript)},
            ],
            temperature=0.2,
        )
    text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
    if not text:
        raise ValueError(f"the LLM returned an empty summary for call {record.session_id}")
    return text


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]


def _quote(text: str, limit: int = QUOTE_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0]
        text = cut.rstrip(",;:") + "…"
    return f'"{text.rstrip(".")}"'


def _duration(record: CallRecord) -> str:
    if record.ended_at is None or record.ended_at < record.started_at or not record.started_at:
        return ""
    seconds = round(record.ended_at - record.started_at)
    minutes, seconds = divmod(seconds, 60)
    return f" over {minutes} min {seconds} s" if minutes else f" over {seconds} s"


def _turns(n: int, who: str) -> str:
    return f"{n} {who} turn{'' if n == 1 else 's'}"


def extractive_summary(record: CallRecord) -> str:
    """A deterministic summary quoting the call's key lines; needs no model."""
    lines = [line for line in record.transcript if line.text.strip()]
    user = [i for i, line in enumerate(lines) if line.role == "user"]
    assistant = [i for i, line in enumerate(lines) if line.role == "assistant"]
    if not lines:
        return EMPTY_CALL_SUMMARY
    parts: list[str] = []
    if user:
        # The first line with two topic words is the request; "hi" or "yes" lines are not.
        request = next((i for i in user if len(_words(lines[i].text)) >= 2), user[0])
        parts.append(f"Caller asked: {_quote(lines[request].text)}.")
        answer = next((i for i in assistant if i > request), None)
        if answer is not None:
            parts.append(f"Assistant answered: {_quote(lines[answer].text)}.")
        frequency = Counter(w for line in lines for w in _words(line.text))

        def score(i: int) -> float:
            words = _words(lines[i].text)
            return sum(frequency[w] for w in words) / len(words) if words else 0.0

        others = [i for i in user if i != request and score(i) > 0]
        if others:
            # Highest average frequency wins; max() keeps the earliest line on a tie.
            best = max(others, key=score)
            parts.append(f"Also discussed: {_quote(lines[best].text, QUOTE_CHARS // 2)}.")
    else:
        parts.append(f"The caller said nothing; the assistant said: {_quote(lines[0].text)}.")
    shape = f"{_turns(len(user), 'caller')} and {_turns(len(assistant), 'assistant')}"
    ended = f"; ended: {record.end_reason}" if record.end_reason else ""
    parts.append(f"{shape}{_duration(record)}{ended}.")
    return " ".join(parts)
