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

import dis
import inspect
import itertools
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from packaging.requirements import Requirement
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADState
from pipecat.transports.smallwebrtc.transport import RawAudioTrack, SmallWebRTCClient

from common.code_names import names_used

__all__ = [
    "PIPECAT",
    "analyze_in_place",
    "check_output_track",
    "check_release",
    "check_silero",
    "check_transport_client",
    "check_vad_analyzer",
    "init_silero_analyzer",
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


def analyze_in_place(analyzer: VADAnalyzer, buffer: bytes) -> VADState:
    """pipecat's analysis of ``buffer`` by ``analyzer``, run where it is called: on the loop.

    pipecat's ``VADAnalyzer.analyze_audio`` hands every 20 ms audio frame to a worker thread
    and awaits it back, though most frames only fill the analyzer's buffer and a scoring is
    short: the hand-over, 50 times a second per call, costs more CPU than the work. pipecat
    has no setting to analyse in place (pipecat-ai/pipecat#5179 proposes handing over only
    whole windows); ``_run_analyzer`` is the step its thread runs.
    """
    state: VADState = analyzer._run_analyzer(buffer)
    return state


#: What ``SileroVADAnalyzer.__init__`` and ``SileroOnnxModel.__init__`` set on the object they
#: initialize, which :func:`init_silero_analyzer` sets itself.
_SILERO_ANALYZER_STATE = frozenset({"_model", "_windows_since_reset", "_low_confidence_windows"})
_SILERO_MODEL_STATE = frozenset({"session", "sample_rates"})


def init_silero_analyzer(analyzer: SileroVADAnalyzer, session: Any, **kwargs: Any) -> None:
    """Initialize ``analyzer`` as ``SileroVADAnalyzer.__init__(**kwargs)`` would, but on the
    onnxruntime ``session`` given instead of one built from pipecat's model file.

    pipecat's analyzer loads Silero's model in its ``__init__``, always from the file in its
    wheel, and onnxruntime optimizes the graph at every load: the larger part of building an
    analyzer, which a bot file does on the call's way to its first word. pipecat takes no
    model or session (pipecat-ai/pipecat#2050 asks for a shared one); the analyzer keeps its
    model in ``_model`` beside the counters of the model's resets, and ``SileroOnnxModel``
    builds its session in its own ``__init__``.
    """
    VADAnalyzer.__init__(analyzer, **kwargs)
    model = SileroOnnxModel.__new__(SileroOnnxModel)
    model.session = session
    model.sample_rates = [8000, 16000]
    model.reset_states()
    analyzer._model = model
    analyzer._windows_since_reset = 0
    analyzer._low_confidence_windows = 0


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


def _stored_on_self(function: Any) -> set[str]:
    """The attributes ``function`` (a method) assigns on ``self``."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    if code is None:
        return set()
    instructions = list(dis.get_instructions(code))
    return {
        store.argval
        for load, store in itertools.pairwise(instructions)
        if store.opname == "STORE_ATTR" and load.opname == "LOAD_FAST" and load.argval == "self"
    }


def check_vad_analyzer(analyzer_class: type) -> None:
    """``analyzer_class`` (pipecat's ``VADAnalyzer``) analyses a buffer in ``_run_analyzer``,
    the step its ``analyze_audio`` hands to its thread, which :func:`analyze_in_place` runs."""
    step = getattr(analyzer_class, "_run_analyzer", None)
    if step is None or inspect.iscoroutinefunction(step):
        raise _moved(f"{analyzer_class.__name__}._run_analyzer")
    if list(inspect.signature(step).parameters) != ["self", "buffer"]:
        raise _moved(f"{analyzer_class.__name__}._run_analyzer's signature")
    if "_run_analyzer" not in names_used(getattr(analyzer_class, "analyze_audio", None)):
        raise _moved(f"{analyzer_class.__name__}.analyze_audio (to _run_analyzer)")


def check_silero(analyzer_class: type, model_class: type) -> None:
    """``analyzer_class`` (pipecat's ``SileroVADAnalyzer``) and ``model_class`` (its
    ``SileroOnnxModel``) set up in their ``__init__`` exactly the state
    :func:`init_silero_analyzer` sets up itself."""
    if analyzer_class.__mro__[1:2] != (VADAnalyzer,):
        raise _moved(f"{analyzer_class.__name__}'s base class (VADAnalyzer)")
    if _stored_on_self(getattr(analyzer_class, "__init__", None)) != _SILERO_ANALYZER_STATE:
        raise _moved(
            f"{analyzer_class.__name__}.__init__'s state ({', '.join(_SILERO_ANALYZER_STATE)})"
        )
    init = getattr(model_class, "__init__", None)
    if _stored_on_self(init) != _SILERO_MODEL_STATE or "reset_states" not in names_used(init):
        raise _moved(f"{model_class.__name__}.__init__'s state (session, sample_rates)")


def check_output_track(track_class: type) -> None:
    """``track_class`` (pipecat's ``RawAudioTrack``) keeps its rate where
    :func:`track_sample_rate` reads it."""
    name = track_class.__name__
    if _RATE not in names_used(getattr(track_class, "__init__", None)):
        raise _moved(f"{name}.{_RATE}")
    if not callable(getattr(track_class, "add_audio_bytes", None)):
        raise _moved(f"{name}.add_audio_bytes")


def check_transport_client(client_class: type) -> None:
    """``client_class`` (pipecat's ``SmallWebRTCClient``) writes audio with its output
    track's ``add_audio_bytes``, which :func:`redirect_audio_writes` replaces."""
    if "add_audio_bytes" not in names_used(getattr(client_class, "write_audio_frame", None)):
        raise _moved(f"{client_class.__name__}.write_audio_frame's add_audio_bytes")


def probe() -> None:
    """Raise ``RuntimeError``, saying what moved and which releases voicebots supports,
    unless the installed pipecat is a supported release with every internal reached here
    where it was."""
    check_release()
    check_output_track(RawAudioTrack)
    check_transport_client(SmallWebRTCClient)
    check_vad_analyzer(VADAnalyzer)
    check_silero(SileroVADAnalyzer, SileroOnnxModel)
