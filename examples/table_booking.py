"""A restaurant host that books tables: an LLM tool call in a voice pipeline.

The caller asks for a table; the LLM calls ``book_table(name, party_size, time)``, the
function answers with a confirmation code, and the LLM reads that code back to the caller.

The speech-to-text, LLM and text-to-speech services all speak OpenAI's API, so any
OpenAI-compatible server works: set ``OPENAI_BASE_URL`` (and ``OPENAI_API_KEY`` if it needs
one). The models come from ``OPENAI_STT_MODEL``, ``OPENAI_LLM_MODEL``, ``OPENAI_TTS_MODEL`` and
``OPENAI_TTS_VOICE``.

Run it on voicebots (``voicebots up --bot examples/table_booking.py``) or on pipecat's
development runner::

    python examples/table_booking.py -t webrtc
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.silero import SileroVADAnalyzer
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
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.openai.tts import OpenAITTSService
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

SYSTEM_PROMPT = (
    "You are the host of a small restaurant, answering the phone. Greet the caller briefly "
    "and offer to book a table. To book one you need the caller's name, how many people, and "
    "the time; ask for whatever is missing, then call book_table. Once it is booked, tell the "
    "caller the confirmation code. Your words are spoken aloud: keep them short and plain, "
    "with no lists, markup or emoji."
)

#: What the LLM is told about the tool; the JSON schema of its arguments.
BOOK_TABLE = FunctionSchema(
    name="book_table",
    description="Book a table at the restaurant. Returns the booking's confirmation code.",
    properties={
        "name": {"type": "string", "description": "The name the booking is under."},
        "party_size": {
            "type": "integer",
            "minimum": 1,
            "maximum": 20,
            "description": "How many people, the caller included.",
        },
        "time": {
            "type": "string",
            "description": "When, as the caller said it, e.g. 'tomorrow at 7:30 pm'.",
        },
    },
    required=["name", "party_size", "time"],
)

#: Letters and digits that cannot be heard as one another when read aloud (no O/0, I/1).
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def openai_endpoint() -> tuple[str | None, str | None]:
    """``(api_key, base_url)`` of the OpenAI-compatible API, from the environment.

    A server without authentication still needs some key in the client, so a base URL alone
    gets a placeholder one.
    """
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get("OPENAI_API_KEY") or ("not-needed" if base_url else None)
    return api_key, base_url


async def book_table(params: FunctionCallParams) -> None:
    """The tool: book a table and hand the LLM its confirmation code.

    A real restaurant would call its reservation system here; the example only checks the
    arguments and makes up a code.
    """
    args = params.arguments
    name = str(args.get("name") or "").strip()
    time = str(args.get("time") or "").strip()
    try:
        party_size = int(args.get("party_size") or 0)
    except (TypeError, ValueError):
        party_size = 0
    if not name or not time or not 1 <= party_size <= 20:
        # Said back to the LLM, which then asks the caller for what is missing.
        await params.result_callback(
            {"error": "A booking needs a name, a party of 1 to 20 people, and a time."}
        )
        return
    confirmation = "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))
    logger.info(f"Booked a table for {party_size} at {time} under {name}: {confirmation}")
    await params.result_callback(
        {"confirmation": confirmation, "name": name, "party_size": party_size, "time": time}
    )


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
    llm.register_function("book_table", book_table)
    tts = OpenAITTSService(
        api_key=api_key,
        base_url=base_url,
        settings=OpenAITTSService.Settings(
            model=os.environ.get("OPENAI_TTS_MODEL", "gpt-4o-mini-tts"),
            voice=os.environ.get("OPENAI_TTS_VOICE", "alloy"),
        ),
    )

    context = LLMContext(tools=ToolsSchema(standard_tools=[BOOK_TABLE]))
    # The VAD sits on the user aggregator, so every transport (WebRTC or a phone) gets the
    # same one. The turn ends after a short pause (see smart_turn.py for a model instead).
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(),
            user_turn_strategies=UserTurnStrategies(stop=[SpeechTimeoutUserTurnStopStrategy()]),
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
