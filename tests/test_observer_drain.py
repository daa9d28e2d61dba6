"""A hung-up call's last words reach its record before its pipeline is cancelled.

pipecat queues each pushed frame to a task per observer, and cancelling a pipeline drops
what is still queued; :meth:`bots.recording.CallRecording.drain` waits for the transcript
observer to take in everything pushed before the hang-up.
"""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import Frame, LLMFullResponseStartFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from bots.recording import CallRecording
from common.record import TranscriptLine


class _Pass(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


async def _run(drain: bool) -> list[str]:
    lines: list[str] = []
    first = asyncio.Event()

    async def slow_line(line: TranscriptLine) -> None:
        # A spawner slow to take the lines: the observer's queue fills behind it.
        await asyncio.sleep(0.005)
        lines.append(line.text)
        first.set()

    async def ignore(_report: object) -> None:
        pass

    recording = CallRecording(slow_line, ignore)
    worker = PipelineWorker(Pipeline([_Pass()]))
    recording.attach(worker)
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())
    await asyncio.sleep(0.2)  # started
    frames: list[Frame] = []
    for i in range(20):
        frames += [TranscriptionFrame(str(i), "caller", "now"), LLMFullResponseStartFrame()]
    await worker.queue_frames(frames)
    await first.wait()  # the pipeline has pushed them; the observer is behind
    if drain:
        await recording.cancel_workers()
    else:
        await worker.cancel()
    await asyncio.wait_for(running, 10)
    return lines


async def test_a_drained_pipeline_loses_no_line() -> None:
    assert await _run(drain=True) == [str(i) for i in range(20)]


async def test_without_the_drain_the_queued_lines_are_lost() -> None:
    # What the drain is for: pipecat drops an observer's queue when the pipeline is cancelled.
    assert len(await _run(drain=False)) < 20
