"""The adapters that hold every reach into upstream internals: their probes pass on the
installed releases, and fail with a message naming what moved when an internal is absent
(each check pointed at a stand-in, the libraries themselves untouched)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from typing import Any

import aioice
import pytest
from aiortc import RTCRtpReceiver
from aiortc.mediastreams import AudioStreamTrack
from packaging.requirements import Requirement
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.transports.smallwebrtc.transport import RawAudioTrack

from bots import compat, pipecat_adapter
from media import aiortc_adapter
from tests import ROOT


def test_the_installed_aiortc_and_aioice_pass_the_probe() -> None:
    aiortc_adapter.probe()


def test_the_adapters_ranges_are_the_pins_of_pyproject() -> None:
    pins = {}
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        pins[requirement.name] = requirement.specifier
    for spec in (aiortc_adapter.AIORTC, aiortc_adapter.AIOICE, pipecat_adapter.PIPECAT):
        requirement = Requirement(spec)
        assert pins[requirement.name] == requirement.specifier, spec


def test_a_release_out_of_range_is_refused_with_the_range() -> None:
    aiortc_adapter.check_release(aiortc_adapter.AIORTC, "1.16.3")
    with pytest.raises(RuntimeError) as refused:
        aiortc_adapter.check_release(aiortc_adapter.AIORTC, "1.17.0")
    assert str(refused.value) == (
        "voicebots supports aiortc>=1.16,<1.17, but aiortc 1.17.0 is installed: "
        "pip install 'aiortc>=1.16,<1.17'"
    )


class RTCRtpReceiverWithoutJitterBuffer:
    """aiortc's receiver as a release that renamed its jitter buffer would have it."""

    def __init__(self) -> None:
        self.__buffer: list[Any] = []

    async def _handle_rtp_packet(self, packet: Any, arrival_time_ms: int) -> None:
        self.__buffer.append(packet)


class ReceiverWithoutPacketHandler:
    def __init__(self) -> None:
        self._RTCRtpReceiver__jitter_buffer: list[Any] = []


def test_a_receiver_without_its_jitter_buffer_fails_the_probe_clearly() -> None:
    aiortc_adapter.check_receiver(RTCRtpReceiver)
    with pytest.raises(RuntimeError) as moved:
        aiortc_adapter.check_receiver(RTCRtpReceiverWithoutJitterBuffer)
    assert str(moved.value).startswith(
        f"aiortc {version('aiortc')} moved RTCRtpReceiverWithoutJitterBuffer.__jitter_buffer; "
        "voicebots supports aiortc>=1.16,<1.17"
    )
    with pytest.raises(RuntimeError, match=r"moved ReceiverWithoutPacketHandler\._handle_rtp"):
        aiortc_adapter.check_receiver(ReceiverWithoutPacketHandler)


class ConnectionWithoutProtocols(aioice.Connection):
    """aioice's connection as a release that no longer keeps a ``_protocols`` list would."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        del self._protocols


def test_an_ice_connection_without_its_sockets_list_fails_the_probe_clearly() -> None:
    aiortc_adapter.check_ice_connection(aioice.Connection)
    with pytest.raises(RuntimeError) as moved:
        aiortc_adapter.check_ice_connection(ConnectionWithoutProtocols)
    assert str(moved.value).startswith(
        f"aioice {version('aioice')} moved ConnectionWithoutProtocols._protocols; "
        "voicebots supports aioice>=0.13,<0.14"
    )


class _Module:
    """A stand-in module: a name and nothing else."""

    __name__ = "stand_in"


def test_modules_without_the_names_reached_fail_the_probe_clearly() -> None:
    with pytest.raises(RuntimeError, match=r"moved stand_in\.Connection \(RTCIceGatherer"):
        aiortc_adapter.check_ice_gatherer(_Module())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"aioice \S+ moved stand_in\.StunProtocol"):
        aiortc_adapter.check_ice_helpers(_Module(), _Module(), _Module())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="RTP hand-over to receivers"):
        aiortc_adapter.check_dtls_dispatch(_Module)


def test_the_installed_pipecat_passes_the_probe() -> None:
    pipecat_adapter.probe()
    compat.check_upstream()


def test_pipecat_out_of_range_is_refused_with_the_range() -> None:
    pipecat_adapter.check_release("1.14.2")
    with pytest.raises(RuntimeError) as refused:
        pipecat_adapter.check_release("1.15.0")
    assert str(refused.value) == (
        "voicebots supports pipecat-ai>=1.14,<1.15, but pipecat-ai 1.15.0 is installed: "
        "pip install 'pipecat-ai>=1.14,<1.15' (beside your bot's own dependencies)"
    )


def test_the_rate_of_pipecats_own_track_only() -> None:
    assert pipecat_adapter.track_sample_rate(RawAudioTrack(sample_rate=24000)) == 24000
    assert pipecat_adapter.track_sample_rate(AudioStreamTrack()) is None


class RawAudioTrackWithoutRate:
    def __init__(self, sample_rate: int) -> None:
        self.rate = sample_rate

    def add_audio_bytes(self, audio: bytes) -> None:
        pass


class ClientWritingElsewhere:
    async def write_audio_frame(self, frame: Any) -> bool:
        return frame is not None


def test_pipecat_classes_without_the_internals_reached_fail_the_probe_clearly() -> None:
    pipecat_adapter.check_output_track(RawAudioTrack)
    with pytest.raises(RuntimeError) as moved:
        pipecat_adapter.check_output_track(RawAudioTrackWithoutRate)
    assert str(moved.value).startswith(
        f"pipecat-ai {version('pipecat-ai')} moved RawAudioTrackWithoutRate._sample_rate; "
        "voicebots supports pipecat-ai>=1.14,<1.15"
    )
    with pytest.raises(
        RuntimeError, match=r"ClientWritingElsewhere\.write_audio_frame's add_audio"
    ):
        pipecat_adapter.check_transport_client(ClientWritingElsewhere)


class AnalyzerWithoutItsStep:
    """pipecat's VAD analyzer as a release that analyses in another method would have it."""

    async def analyze_audio(self, buffer: bytes) -> Any:
        return self.analyze(buffer)

    def analyze(self, buffer: bytes) -> Any:
        return len(buffer)


class SileroWithMoreState(VADAnalyzer):
    """pipecat's Silero analyzer as a release that keeps more state would have it."""

    def __init__(self) -> None:
        super().__init__()
        self._model = None
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._last_reset_at = 0.0

    def num_frames_required(self) -> int:
        return 512

    def voice_confidence(self, buffer: bytes) -> float:
        return 0.0


class SileroModelLoadedLater:
    """pipecat's Silero model as a release that builds its session on first use would have it."""

    def __init__(self, path: str) -> None:
        self.path = path


def test_pipecat_vad_internals_moved_fail_the_probe_clearly() -> None:
    pipecat_adapter.check_vad_analyzer(VADAnalyzer)
    with pytest.raises(RuntimeError, match=r"moved AnalyzerWithoutItsStep\._run_analyzer;"):
        pipecat_adapter.check_vad_analyzer(AnalyzerWithoutItsStep)
    pipecat_adapter.check_silero(SileroVADAnalyzer, SileroOnnxModel)
    with pytest.raises(RuntimeError, match=r"moved SileroWithMoreState\.__init__'s state"):
        pipecat_adapter.check_silero(SileroWithMoreState, SileroOnnxModel)
    with pytest.raises(RuntimeError, match=r"moved SileroModelLoadedLater\.__init__'s state"):
        pipecat_adapter.check_silero(SileroVADAnalyzer, SileroModelLoadedLater)
