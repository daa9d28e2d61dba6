"""The call's WebRTC connection: made before the call, answered by the warm bot, handed over.

The bot file gets this connection as ``runner_args.webrtc_connection`` and builds pipecat's
transport on it (``create_transport``), so what voicebots does better on the wire belongs to
the connection, not to the user's pipeline: the bot's voice as paced 20 ms Opus packets
(:class:`VoiceConnection`, :mod:`media.voice_track`) and the audio jitter buffer
(:mod:`media.jitter`).

The peer connection and its ICE policy are made while the bot is idle; the answer negotiates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiortc.sdp import candidate_from_sdp
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

from bots import pipecat_adapter
from bots.config import BotConfig
from media import ice
from media.jitter import tune_audio_receivers
from media.voice_track import RTP_RATE, VoiceTrack

__all__ = ["CallConnection", "VoiceConnection", "prepare_connection"]


class VoiceConnection(SmallWebRTCConnection):
    """pipecat's peer connection, sending the bot's voice through a :class:`VoiceTrack`.

    pipecat's transport builds its own output track, at the pipeline's output rate, when the
    client connects and passes it here; a voice track at the same rate goes to the sender
    instead, and the writes pipecat makes to its track are redirected to it (that track's
    ``recv`` is never called). A rate Opus cannot encode natively (22.05 kHz, say), or a track
    that is not pipecat's, is sent as it is.
    """

    def replace_audio_track(self, track: Any) -> None:
        rate = pipecat_adapter.track_sample_rate(track)
        if rate is not None and RTP_RATE % rate == 0:
            voice = VoiceTrack(rate)
            pipecat_adapter.redirect_audio_writes(track, voice.add_audio_bytes)
            track = voice
        super().replace_audio_track(track)


@dataclass
class CallConnection:
    """One call's peer connection, not yet negotiated."""

    connection: VoiceConnection
    jitter_frames: int

    async def answer(self, sdp: str, sdp_type: str) -> dict[str, Any]:
        """Apply the caller's offer; the answer carries all local ICE candidates."""
        await self.connection.initialize(sdp=sdp, type=sdp_type)
        return self._answer()

    async def renegotiate(self, sdp: str, sdp_type: str, restart_pc: bool) -> dict[str, Any]:
        await self.connection.renegotiate(sdp=sdp, type=sdp_type, restart_pc=restart_pc)
        return self._answer()

    def _answer(self) -> dict[str, Any]:
        tune_audio_receivers(self.connection.pc, self.jitter_frames)
        answer = self.connection.get_answer()
        if answer is None:
            raise RuntimeError("the peer connection produced no SDP answer")
        return dict(answer)

    async def add_candidates(self, candidates: list[dict[str, Any]]) -> None:
        """Trickled ICE candidates; an empty one marks the end of the caller's."""
        for item in candidates:
            text = str(item.get("candidate") or "")
            if text.startswith("candidate:"):
                text = text[len("candidate:") :]
            if text:
                candidate = candidate_from_sdp(text)
                candidate.sdpMid = item.get("sdp_mid")
                candidate.sdpMLineIndex = item.get("sdp_mline_index")
                await self.connection.add_ice_candidate(candidate)
            else:
                await self.connection.add_ice_candidate(None)


def prepare_connection(config: BotConfig) -> CallConnection:
    """A fresh peer connection under the call's ICE policy: it binds in
    ``VOICEBOTS_UDP_PORTS`` on ``VOICEBOTS_BIND_HOST`` and advertises ``VOICEBOTS_PUBLIC_IP``
    (installed for the whole process, whose one peer this is)."""
    ice.install(ice.IcePolicy.from_config(config.media))
    connection = VoiceConnection(
        ice_servers=ice.peer_ice_servers(config.media),
        connection_timeout_secs=max(1, int(config.connect_timeout)),
    )
    return CallConnection(connection=connection, jitter_frames=config.jitter_frames)
