"""Frames already pushed reach the observers before a hung-up call's pipeline is cancelled."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import Frame, TextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import WorkerRunner
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bots.pipeline import drain_observers


class _SlowObserver(BaseObserver):
    """Takes 5 ms per frame, so a burst of frames queues up in front of it."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.seen_one = asyncio.Event()

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, TextFrame) and data.first_push:
            await asyncio.sleep(0.005)
            self.texts.append(data.frame.text)
            self.seen_one.set()


class _Pass(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


async def _run(drain: bool) -> list[str]:
    observer = _SlowObserver()
    task = PipelineWorker(Pipeline([_Pass()]), observers=[observer])
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(task)
    running = asyncio.ensure_future(runner.run())
    await asyncio.sleep(0.2)  # started
    sent = [str(i) for i in range(20)]
    await task.queue_frames([TextFrame(text) for text in sent])
    await observer.seen_one.wait()  # the pipeline has pushed them; the observer is behind
    if drain:
        assert await drain_observers(task, timeout=5.0)
    await task.cancel()
    await asyncio.wait_for(running, 10)
    return observer.texts


async def test_a_drained_pipeline_loses_no_observed_frame() -> None:
    assert await _run(drain=True) == [str(i) for i in range(20)]


async def test_without_the_drain_the_queued_frames_are_lost() -> None:
    # What the drain is for: pipecat drops an observer's queue when the pipeline is cancelled.
    assert len(await _run(drain=False)) < 20
