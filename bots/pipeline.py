"""The per-call pipecat pipeline: Silero VAD → STT → LLM → TTS on one SmallWebRTC peer.

Everything that does not depend on the caller's offer — the aiortc peer connection object,
the services, the VAD and turn models, the pipeline and its task — is built by
:func:`prepare_call` while the bot is idle, so taking a call costs only the SDP answer.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection
from loguru import logger
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, InputAudioRawFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_stop.turn_analyzer_user_turn_stop_strategy import (
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bots.config import BotConfig, TurnStrategy
from bots.record import TranscriptLine
from bots.services import OpenAISession, make_llm, make_stt, make_tts, preconnect
from bots.turn_metrics import ReportCallback, TurnMetricsObserver
from bots.vad import InlineSileroVAD
from media import certificates, ice
from media.decoding import decode_audio_inline
from media.jitter import tune_audio_receivers
from media.voice_track import VoiceConnection
from media.voice_transport import VoiceTransport

__all__ = ["CallPipeline", "LineCallback", "prepare_call"]

LineCallback = Callable[[TranscriptLine], Awaitable[None]]

#: Opus runs at 48 kHz; STT and VAD want 16 kHz, TTS voices are 24 kHz.
AUDIO_IN_RATE = 16000
AUDIO_OUT_RATE = 24000
#: At most this long for the observers to catch up before a hung-up call's pipeline is cancelled.
OBSERVER_DRAIN = 0.5


async def drain_observers(task: PipelineWorker, timeout: float = OBSERVER_DRAIN) -> bool:
    """Wait until ``task``'s observers have taken in every frame already pushed.

    pipecat queues each pushed frame to a task per observer, and cancelling the pipeline drops
    what is still queued. A caller who hangs up the instant the reply starts (its first packet
    leaves within milliseconds of the transport's "bot started speaking") would otherwise take
    the turn's metrics with it. The queues are the private ``_proxies`` of the worker's
    observer (pipecat is pinned in pyproject.toml). Returns whether they drained in time.
    """
    proxies = getattr(getattr(task, "_observer", None), "_proxies", None) or {}
    queues = [proxy.queue for proxy in proxies.values()]
    try:
        await asyncio.wait_for(asyncio.gather(*(queue.join() for queue in queues)), timeout)
    except TimeoutError:
        return False
    return True


async def cancel_pipeline(task: PipelineWorker) -> None:
    """Cancel ``task`` once its observers have taken in what it already pushed."""
    if not await drain_observers(task):
        logger.warning("the observers were still behind the pipeline when it ended")
    await task.cancel()


class _InboundAudioClock(FrameProcessor):
    """Notes when caller audio last arrived, for the idle-timeout watchdog."""

    def __init__(self) -> None:
        super().__init__(name="InboundAudioClock")
        self.last_audio_at = time.monotonic()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.last_audio_at = time.monotonic()
        await self.push_frame(frame, direction)


class _InboundAudioEnd(FrameProcessor):
    """Caller audio ends here: past the user aggregator (VAD, turns) nothing uses it, and
    each 20 ms frame would otherwise cross the LLM, TTS and output processors too."""

    def __init__(self) -> None:
        super().__init__(name="InboundAudioEnd")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)


@dataclass
class CallPipeline:
    """One call's pipeline, ready before the call arrives."""

    connection: SmallWebRTCConnection
    transport: VoiceTransport
    task: PipelineWorker
    inbound: _InboundAudioClock
    jitter_frames: int
    #: Opens the provider connections the first turn will use (none for offline providers).
    preconnect: Callable[[], Awaitable[None]] | None = None
    #: Whether :meth:`gather_ahead` may gather before the offer (no STUN or TURN servers).
    may_gather_ahead: bool = False
    #: Set from connection/transport events; read when the pipeline has ended.
    end_reason: str = ""

    async def gather_ahead(self) -> bool:
        """Before the offer: add the audio transceiver a caller's offer will be matched to,
        gather its ICE candidates and compute its certificate's fingerprints, so that the
        answer only negotiates. The data channel shares this transport (max-bundle).

        Host candidates only: with STUN or TURN servers, a NAT mapping or a relay allocation
        made now could expire before the call comes, so the answer gathers as before. Returns
        whether it gathered. A failure (a full UDP port range) leaves the peer connection
        unable to gather again: the caller replaces the call's pipeline.
        """
        if not self.may_gather_ahead:
            return False
        await gather_ahead(self.connection.pc)
        return True

    async def answer(self, sdp: str, sdp_type: str) -> dict[str, Any]:
        """Apply the caller's offer; the answer carries all local ICE candidates."""
        await self.connection.initialize(sdp=sdp, type=sdp_type)
        tune_audio_receivers(self.connection.pc, self.jitter_frames)
        decode_audio_inline(self.connection.pc)
        answer = self.connection.get_answer()
        if answer is None:
            raise RuntimeError("the peer connection produced no SDP answer")
        return dict(answer)

    async def renegotiate(self, sdp: str, sdp_type: str, restart_pc: bool) -> dict[str, Any]:
        await self.connection.renegotiate(sdp=sdp, type=sdp_type, restart_pc=restart_pc)
        tune_audio_receivers(self.connection.pc, self.jitter_frames)
        decode_audio_inline(self.connection.pc)
        answer = self.connection.get_answer()
        if answer is None:
            raise RuntimeError("renegotiation produced no SDP answer")
        return dict(answer)


def _turn_strategies(config: BotConfig) -> UserTurnStrategies:
    if config.turn_strategy is TurnStrategy.SMART_TURN:
        from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

        stop: Any = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=LocalSmartTurnAnalyzerV3())
    else:
        stop = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=config.turn_stop_secs)
    return UserTurnStrategies(stop=[stop])


async def gather_ahead(pc: RTCPeerConnection) -> None:
    """Give an answerer's ``pc`` its audio transceiver, its gathered candidates and its
    fingerprints before the offer (see :meth:`CallPipeline.gather_ahead`)."""
    transport = pc.addTransceiver("audio", direction="sendrecv").receiver.transport
    await transport.transport.iceGatherer.gather()
    transport.getLocalParameters()  # the fingerprints, computed once (media.certificates)


def prepare_call(
    config: BotConfig, on_line: LineCallback, on_turn: ReportCallback, *, tracing: bool = False
) -> CallPipeline:
    """Build a call's pipeline with a fresh, not yet negotiated peer connection.

    ``on_line`` receives each transcript line as it becomes final: the user's text when
    their turn is written to the LLM context, the assistant's when its turn ends (cut at
    the interruption point if the caller barged in). ``on_turn`` receives each turn's latency
    milestones. With ``tracing``, pipecat's conversation/turn/stt/llm/tts spans are emitted
    under whatever span is current when the pipeline runs (the bot's ``call`` span).
    """
    # ICE binds in VOICEBOTS_UDP_PORTS on VOICEBOTS_BIND_HOST and advertises
    # VOICEBOTS_PUBLIC_IP; installed for the whole process, whose one peer this is.
    ice.install(ice.IcePolicy.from_config(config.media))
    certificates.install()
    ice_servers = ice.peer_ice_servers(config.media)
    connection = VoiceConnection(
        sample_rate=AUDIO_OUT_RATE,
        ice_servers=ice_servers,
        connection_timeout_secs=max(1, int(config.connect_timeout)),
    )
    transport = VoiceTransport(
        webrtc_connection=connection,
        params=TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_10ms_chunks=2,
        ),
    )
    vad = InlineSileroVAD(params=VADParams(stop_secs=config.vad_stop_secs))
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad, user_turn_strategies=_turn_strategies(config)
        ),
    )
    inbound = _InboundAudioClock()
    uses_openai = "openai" in (config.providers.stt, config.providers.llm, config.providers.tts)
    session = OpenAISession.open(config.providers) if uses_openai else None
    pipeline = Pipeline(
        [
            transport.input(),
            inbound,
            make_stt(config.providers, session),
            aggregators.user(),
            _InboundAudioEnd(),
            make_llm(config.providers, session, system_prompt=config.system_prompt),
            make_tts(config.providers, session),
            transport.output(),
            aggregators.assistant(),
        ]
    )
    task = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=AUDIO_IN_RATE,
            audio_out_sample_rate=AUDIO_OUT_RATE,
            enable_metrics=True,
        ),
        # The bot's own watchdogs (idle, max duration) end calls; pipecat's would not say why.
        idle_timeout_secs=None,
        observers=[TurnMetricsObserver(on_turn, vad_stop_secs=config.vad_stop_secs, vad=vad)],
        enable_tracing=tracing,
    )
    call = CallPipeline(
        connection=connection,
        transport=transport,
        task=task,
        inbound=inbound,
        jitter_frames=config.jitter_frames,
        preconnect=None if session is None else functools.partial(preconnect, session),
        may_gather_ahead=not ice_servers,
    )

    @aggregators.user().event_handler("on_user_turn_message_added")
    async def _user_line(_aggregator: Any, message: Any) -> None:
        text = (message.content or "").strip()
        if text:
            await on_line(TranscriptLine(role="user", text=text, ts=time.time()))

    @aggregators.assistant().event_handler("on_assistant_turn_stopped")
    async def _assistant_line(_aggregator: Any, message: Any) -> None:
        text = (message.content or "").strip()
        if text:
            await on_line(TranscriptLine(role="assistant", text=text, ts=time.time()))

    greeted = False

    @transport.event_handler("on_client_connected")
    async def _connected(_transport: Any, _client: Any) -> None:
        # A restart_pc renegotiation connects the client again; greet only the first time.
        nonlocal greeted
        if config.greeting and not greeted:
            greeted = True
            # Spoken without the LLM, so the assistant aggregator never sees it as a turn.
            await task.queue_frames([TTSSpeakFrame(config.greeting)])
            await on_line(TranscriptLine(role="assistant", text=config.greeting, ts=time.time()))

    @transport.event_handler("on_client_disconnected")
    async def _disconnected(_transport: Any, _client: Any) -> None:
        if not call.end_reason:
            call.end_reason = "client_hangup"
        await cancel_pipeline(task)

    @connection.event_handler("failed")
    async def _failed(_connection: Any) -> None:
        if not call.end_reason:
            call.end_reason = "ice_failed"
        logger.warning("peer connection failed")

    return call
