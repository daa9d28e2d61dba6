"""A voice assistant that waits for the caller to finish: pipecat's Smart Turn model.

A pause is not always the end of a turn ("I'd like to book a table for... um... four").
Here the turn ends when Smart Turn v3, a small audio model, judges from the caller's voice
that they have finished, rather than after a fixed silence (compare table_booking.py). The
model ships inside the pipecat package and runs on the CPU through onnxruntime: nothing is
downloaded.

The speech-to-text, LLM and text-to-speech services speak OpenAI's API: set
``OPENAI_BASE_URL`` for any OpenAI-compatible server, ``OPENAI_API_KEY`` if it needs one, and
optionally ``OPENAI_STT_MODEL``, ``OPENAI_LLM_MODEL``, ``OPENAI_TTS_MODEL``,
``OPENAI_TTS_VOICE``.

Run it on voicebots (``voicebots up --bot examples/smart_turn.py``) or on pipecat's
development runner::

    python examples/smart_turn.py -t webrtc
"""

from __future__ import annotations

import os
from typing import Any

from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.turns.user_stop.turn_analyzer_user_turn_stop_strategy import (
    TurnAnalyzerUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a phone call. Greet the caller briefly and ask "
    "how you can help. Your words are spoken aloud: answer in one or two short sentences, "
    "with no lists, markup or emoji."
)

#: The VAD only reports pauses quickly; Smart Turn decides which pause ends the turn.
VAD_STOP_SECS = 0.2


def openai_endpoint() -> tuple[str | None, str | None]:
    """``(api_key, base_url)`` of the OpenAI-compatible API, from the environment.

    A server without authentication still needs some key in the client, so a base URL alone
    gets a placeholder one.
    """
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get("OPENAI_API_KEY") or ("not-needed" if base_url else None)
    return api_key, base_url


def _webrtc_params() -> TransportParams:
    return TransportParams(audio_in_enabled=True, audio_out_enabled=True)


def _telephony_params() -> TransportParams:
    # Imported here: the phone transports need FastAPI, which a WebRTC-only install lacks.
    from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

    # The runner adds the provider's serializer; phone audio needs no WAV header.
    return FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True)


#: Transport parameters by transport; the runner picks the one the call came in on.
transport_params: dict[str, Any] = {
    "webrtc": _webrtc_params,
    "twilio": _telephony_params,
    "telnyx": _telephony_params,
    "plivo": _telephony_params,
}


def user_turn_strategies() -> UserTurnStrategies:
    """Smart Turn as the only way a user turn ends.

    The analyzer is loaded per call: it keeps the audio of the turn in progress, so two
    calls cannot share one.
    """
    analyzer = LocalSmartTurnAnalyzerV3()
    return UserTurnStrategies(stop=[TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer)])


async def run_bot(transport: BaseTransport, runner_args: RunnerArguments) -> None:
    """One call: the pipeline on ``transport``, until the caller hangs up."""
    api_key, base_url = openai_endpoint()
    stt = OpenAISTTService(
        api_key=api_key,
        base_url=base_url,
        settings=OpenAISTTService.Settings(
            model=os.environ.get("OPENAI_STT_MODEL", "gpt-4o-transcribe")
        ),
    )
    llm = OpenAILLMService(
        api_key=api_key,
        base_url=base_url,
        settings=OpenAILLMService.Settings(
            model=os.environ.get("OPENAI_LLM_MODEL", "gpt-4o-mini"),
            system_instruction=SYSTEM_PROMPT,
        ),
    )
    tts = OpenAITTSService(
        api_key=api_key,
        base_url=base_url,
        settings=OpenAITTSService.Settings(
            model=os.environ.get("OPENAI_TTS_MODEL", "gpt-4o-mini-tts"),
            voice=os.environ.get("OPENAI_TTS_VOICE", "alloy"),
        ),
    )

    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=VAD_STOP_SECS)),
            user_turn_strategies=user_turn_strategies(),
        ),
    )

    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport: BaseTransport, client: Any) -> None:
        # The system prompt tells the LLM to greet first.
        await worker.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport: BaseTransport, client: Any) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
    await runner.add_workers(worker)
    await runner.run()


async def bot(runner_args: RunnerArguments) -> None:
    """The entry point voicebots and pipecat's runner call for each session."""
    transport = await create_transport(runner_args, transport_params)
    await run_bot(transport, runner_args)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
