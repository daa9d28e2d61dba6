"""The call's WebRTC connection: made before the call, answered by the warm bot, handed over.

The bot file gets this connection as ``runner_args.webrtc_connection`` and builds pipecat's
transport on it (``create_transport``), so what voicebots does better on the wire belongs to
the connection, not to the user's pipeline: the bot's voice as paced 20 ms Opus packets
(:class:`media.voice_track.VoiceConnection`), the audio jitter buffer
(:mod:`media.jitter`) and received audio decoded on the event loop (:mod:`media.decoding`).

Everything that does not depend on the caller's offer — the peer connection, its ICE policy,
and, without STUN or TURN servers, its audio transceiver, gathered candidates and
fingerprints — is made while the bot is idle, so that the answer only negotiates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from bots.config import BotConfig
from media import certificates, ice
from media.decoding import decode_audio_inline
from media.jitter import tune_audio_receivers
from media.voice_track import VoiceConnection

__all__ = ["CallConnection", "gather_ahead", "prepare_connection"]


async def gather_ahead(pc: RTCPeerConnection) -> None:
    """Give an answerer's ``pc`` its audio transceiver, its gathered candidates and its
    fingerprints before the offer (see :meth:`CallConnection.gather_ahead`)."""
    transport = pc.addTransceiver("audio", direction="sendrecv").receiver.transport
    await transport.transport.iceGatherer.gather()
    transport.getLocalParameters()  # the fingerprints, computed once (media.certificates)


@dataclass
class CallConnection:
    """One call's peer connection, not yet negotiated."""

    connection: VoiceConnection
    jitter_frames: int
    #: Whether :meth:`gather_ahead` may gather before the offer (no STUN or TURN servers).
    may_gather_ahead: bool = False

    async def gather_ahead(self) -> bool:
        """Before the offer: add the audio transceiver a caller's offer will be matched to,
        gather its ICE candidates and compute its certificate's fingerprints. The data
        channel shares this transport (max-bundle).

        Host candidates only: with STUN or TURN servers, a NAT mapping or a relay allocation
        made now could expire before the call comes. Returns whether it gathered. A failure
        (a full UDP port range) leaves the peer connection unable to gather again: the
        caller replaces it.
        """
        if not self.may_gather_ahead:
            return False
        await gather_ahead(self.connection.pc)
        return True

    async def answer(self, sdp: str, sdp_type: str) -> dict[str, Any]:
        """Apply the caller's offer; the answer carries all local ICE candidates."""
        await self.connection.initialize(sdp=sdp, type=sdp_type)
        return self._answer()

    async def renegotiate(self, sdp: str, sdp_type: str, restart_pc: bool) -> dict[str, Any]:
        await self.connection.renegotiate(sdp=sdp, type=sdp_type, restart_pc=restart_pc)
        return self._answer()

    def _answer(self) -> dict[str, Any]:
        tune_audio_receivers(self.connection.pc, self.jitter_frames)
        decode_audio_inline(self.connection.pc)
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
    certificates.install()
    ice_servers = ice.peer_ice_servers(config.media)
    connection = VoiceConnection(
        ice_servers=ice_servers,
        connection_timeout_secs=max(1, int(config.connect_timeout)),
    )
    return CallConnection(
        connection=connection,
        jitter_frames=config.jitter_frames,
        may_gather_ahead=not ice_servers,
    )
