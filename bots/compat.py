"""The pipecat releases voicebots supports, checked where a server starts.

A user's bot file brings its own pipecat services and processors, so pipecat is not pinned to
one release; the range below is the one voicebots is tested with (the same as in
pyproject.toml). Outside it, voicebots refuses to start and says which to install.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["PIPECAT_RANGE", "check_pipecat", "pipecat_problem"]

#: Inclusive lower bound, exclusive upper bound, as ``pipecat-ai`` release numbers.
PIPECAT_RANGE = ((1, 14), (1, 15))


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _spec() -> str:
    low, high = PIPECAT_RANGE
    return f"pipecat-ai>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"


def pipecat_problem(installed: str | None = None) -> str | None:
    """What is wrong with the installed pipecat, or ``None`` when it is supported."""
    if installed is None:
        try:
            installed = version("pipecat-ai")
        except PackageNotFoundError:
            return f"pipecat is not installed: pip install '{_spec()}'"
    release = _release(installed)
    low, high = PIPECAT_RANGE
    if not (low <= release < high):
        return (
            f"voicebots supports {_spec()}, but pipecat-ai {installed} is installed: "
            f"pip install '{_spec()}' (beside your bot's own dependencies)"
        )
    return None


def check_pipecat() -> None:
    """Raise ``ValueError`` (the CLI's "bad setting" path) when pipecat is unsupported."""
    problem = pipecat_problem()
    if problem is not None:
        raise ValueError(problem)
