"""Every reach voicebots makes into pipecat's internals, and the probe of them.

voicebots extends pipecat through its public doors: observers, event handlers, processors,
service parameters and the ``PIPECAT_SETUP_FILES`` hook. Where none fits, the reach is a
function here, whose docstring says what it does and what pipecat lacks. Nothing else in
voicebots touches a private attribute of a pipecat object.

A user's bot file brings its own pipecat services and processors, so voicebots supports a
range of pipecat releases rather than one: :data:`PIPECAT`, the range pyproject.toml pins and
voicebots is tested with. :func:`probe` checks, where a server starts (the spawner, before its
zygote forks any bot, and ``voicebots up``), that the installed pipecat is in that range and
that every internal reached is still where it was, so that an upgrade that moves one stops the
server with a message naming it. Each check takes the class it inspects, so a test can point
it at a stand-in.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from types import CodeType
from typing import Any

from packaging.requirements import Requirement
from pipecat.transports.smallwebrtc.transport import RawAudioTrack, SmallWebRTCClient

__all__ = [
    "PIPECAT",
    "check_output_track",
    "check_release",
    "check_transport_client",
    "probe",
    "redirect_audio_writes",
    "track_sample_rate",
]

#: The pipecat releases voicebots is tested with (pinned in pyproject.toml).
PIPECAT = "pipecat-ai>=1.14,<1.15"

_RATE = "_sample_rate"


def track_sample_rate(track: Any) -> int | None:
    """The sample rate of the audio pipecat's WebRTC transport writes to ``track``, its own
    output track; ``None`` for any other track.

    pipecat builds its ``RawAudioTrack`` at the pipeline's output rate when the client
    connects and hands it to the connection's ``replace_audio_track``; the track keeps that
    rate in a private attribute and nothing else tells it.
    """
    rate = getattr(track, _RATE, None) if isinstance(track, RawAudioTrack) else None
    return rate if isinstance(rate, int) and rate > 0 else None


def redirect_audio_writes(track: RawAudioTrack, write: Callable[[bytes], Any]) -> None:
    """Send the audio pipecat's transport writes to its own output ``track`` to ``write``.

    pipecat's transport writes the bot's voice with ``add_audio_bytes`` on the track it made,
    and awaits what that returns to pace its output; it has no way to be given another track
    to write to. Replacing the method on that instance redirects the writes; the track itself
    is then never read.
    """
    setattr(track, "add_audio_bytes", write)  # noqa: B010 - mypy forbids assigning a method


# -- The probe ------------------------------------------------------------------------------


def _installed() -> str | None:
    try:
        return version(Requirement(PIPECAT).name)
    except PackageNotFoundError:
        return None


def _moved(what: str) -> RuntimeError:
    return RuntimeError(
        f"pipecat-ai {_installed()} moved {what}; voicebots supports {PIPECAT} "
        "(bots/pipecat_adapter.py reaches it)"
    )


def check_release(installed: str | None = None) -> None:
    """Raise ``RuntimeError`` unless the installed (or the ``installed``) pipecat release is
    one voicebots supports."""
    installed = installed or _installed()
    if installed is None:
        raise RuntimeError(f"pipecat is not installed: pip install '{PIPECAT}'")
    if not Requirement(PIPECAT).specifier.contains(installed, prereleases=True):
        raise RuntimeError(
            f"voicebots supports {PIPECAT}, but pipecat-ai {installed} is installed: "
            f"pip install '{PIPECAT}' (beside your bot's own dependencies)"
        )


def _names_used(function: Any) -> set[str]:
    """The attribute and global names ``function``'s code refers to (nested code included)."""
    names: set[str] = set()
    codes = [getattr(inspect.unwrap(function), "__code__", None)] if function else []
    while codes:
        code = codes.pop()
        if isinstance(code, CodeType):
            names.update(code.co_names)
            codes.extend(code.co_consts)
    return names


def check_output_track(track_class: type) -> None:
    """``track_class`` (pipecat's ``RawAudioTrack``) keeps its rate where
    :func:`track_sample_rate` reads it."""
    name = track_class.__name__
    if _RATE not in _names_used(getattr(track_class, "__init__", None)):
        raise _moved(f"{name}.{_RATE}")
    if not callable(getattr(track_class, "add_audio_bytes", None)):
        raise _moved(f"{name}.add_audio_bytes")


def check_transport_client(client_class: type) -> None:
    """``client_class`` (pipecat's ``SmallWebRTCClient``) writes audio with its output
    track's ``add_audio_bytes``, which :func:`redirect_audio_writes` replaces."""
    if "add_audio_bytes" not in _names_used(getattr(client_class, "write_audio_frame", None)):
        raise _moved(f"{client_class.__name__}.write_audio_frame's add_audio_bytes")


def probe() -> None:
    """Raise ``RuntimeError``, saying what moved and which releases voicebots supports,
    unless the installed pipecat is a supported release with every internal reached here
    where it was."""
    check_release()
    check_output_track(RawAudioTrack)
    check_transport_client(SmallWebRTCClient)
