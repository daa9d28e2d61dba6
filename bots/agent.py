"""The built-in agent: Silero VAD → STT → LLM → TTS, an ordinary bot file.

It is written in pipecat's runner convention like any user's bot file, and runs the same way:
``voicebots up`` runs it when no ``--bot`` is given, and ``python examples/builtin.py -t webrtc``
runs it on pipecat's development runner. Its settings come from the environment, as a bot
file's do (``VOICEBOTS_STT`` / ``_LLM`` / ``_TTS``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``ELEVENLABS_API_KEY``, ``VOICEBOTS_SYSTEM_PROMPT``, ``VOICEBOTS_GREETING``; see README): with
no key set, every provider is offline (pocketsphinx, a scripted LLM, espeak-ng). Its turn ends
after a fixed silence; ``examples/smart_turn.py`` is the same agent with a model deciding.

Imported once by the zygote: the provider modules, the VAD's graph and, for offline speech
recognition, its model, are shared by every warm bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
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
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.transports.base_transport import TransportParams
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from bots.config import AgentConfig
from bots.services import OpenAISession, make_llm, make_stt, make_tts, preconnect
from bots.vad import MeasuringSileroVAD

__all__ = ["CONFIG", "bot"]

#: Read once, where the file is imported (the zygote, or pipecat's runner).
CONFIG = AgentConfig.from_env(os.environ)

#: STT and VAD want 16 kHz; TTS voices are 24 kHz, one of Opus's own rates.
AUDIO_IN_RATE = 16000
AUDIO_OUT_RATE = 24000

if CONFIG.providers.stt == "offline":
    # pocketsphinx's model (~90 MB), loaded once and shared by every bot.
    from bots.providers.offline_stt import preload_decoder

    preload_decoder()


class InboundAudioEnd(FrameProcessor):
    """Caller audio ends here: past the user aggregator (VAD, turns) nothing uses it, and
    each 20 ms frame would otherwise cross the LLM, TTS and output processors too."""

    def __init__(self) -> None:
        super().__init__(name="InboundAudioEnd")

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)


def _audio_params() -> TransportParams:
    return TransportParams(audio_in_enabled=True, audio_out_enabled=True, audio_out_10ms_chunks=2)


#: One entry per transport pipecat's runner knows; phones get the same agent.
TRANSPORT_PARAMS = {
    "webrtc": _audio_params,
    "twilio": _audio_params,
    "telnyx": _audio_params,
    "plivo": _audio_params,
    "exotel": _audio_params,
}


def _turn_strategies() -> UserTurnStrategies:
    stop = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=CONFIG.turn_stop_secs)
    return UserTurnStrategies(stop=[stop])


def _tracing() -> bool:
    """pipecat's conversation spans, when the process exports traces (voicebots' bots do
    when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


async def bot(runner_args: RunnerArguments) -> None:
    """One call: the pipeline on the call's transport, until the caller hangs up."""
    transport = await create_transport(runner_args, TRANSPORT_PARAMS)
    providers = CONFIG.providers
    uses_openai = "openai" in (providers.stt, providers.llm, providers.tts)
    session = OpenAISession.open(providers) if uses_openai else None
    vad = MeasuringSileroVAD(params=VADParams(stop_secs=CONFIG.vad_stop_secs))
    aggregators = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad, user_turn_strategies=_turn_strategies()
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            make_stt(providers, session),
            aggregators.user(),
            InboundAudioEnd(),
            make_llm(providers, session, system_prompt=CONFIG.system_prompt),
            make_tts(providers, session),
            transport.output(),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=AUDIO_IN_RATE,
            audio_out_sample_rate=AUDIO_OUT_RATE,
            enable_metrics=True,
        ),
        idle_timeout_secs=runner_args.pipeline_idle_timeout_secs,
        enable_tracing=_tracing(),
    )
    greeted = False

    @transport.event_handler("on_client_connected")
    async def _connected(_transport: Any, _client: Any) -> None:
        # A restart_pc renegotiation connects the client again; greet only the first time.
        nonlocal greeted
        if CONFIG.greeting and not greeted:
            greeted = True
            # Spoken without the LLM, so the assistant aggregator never sees it as a turn.
            await worker.queue_frames([TTSSpeakFrame(CONFIG.greeting)])

    @transport.event_handler("on_client_disconnected")
    async def _disconnected(_transport: Any, _client: Any) -> None:
        await worker.cancel()

    # The provider connections the first turn will use open while the caller connects.
    warming = None if session is None else asyncio.ensure_future(preconnect(session))
    runner = WorkerRunner(
        handle_sigint=runner_args.handle_sigint, handle_sigterm=runner_args.handle_sigterm
    )
    await runner.add_workers(worker)
    try:
        await runner.run()
    finally:
        if warming is not None:
            warming.cancel()
            with contextlib.suppress(BaseException):
                await warming
        if session is not None:
            await session.http.aclose()


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
