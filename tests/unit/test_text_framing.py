"""Text deltas in frames (TextFrames in front of a real JobQueue's context): the first at once, the
rest merged per frame, held text sent before any other report, a cancel, or the end."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Any

from servers.runtime.events import CancelledEvent, Output, ProgressEvent, StageChanged, Succeeded, TextDelta
from servers.runtime.queue import JobContext, JobQueue
from servers.text.framing import TextFrames


def make_queue() -> JobQueue:
    queue = JobQueue(name="test", id_prefix="t", devices=["cpu"], max_queued=4)
    queue.start()
    return queue


async def collect(queue: JobQueue, job) -> list:
    return [event async for event in queue.events(job)]


def framed(frame_seconds: float) -> Callable[[Callable[[TextFrames], Any]], Callable[[JobContext], Any]]:
    """Run a job's work behind TextFrames, flushed when it ends (as the Text servicer does)."""

    def wrap(work: Callable[[TextFrames], Any]) -> Callable[[JobContext], Any]:
        @functools.wraps(work)
        def run(context: JobContext) -> Any:
            frames = TextFrames(context, frame_seconds)
            try:
                return work(frames)
            finally:
                frames.flush()

        return run

    return wrap


def texts(events: list) -> list[TextDelta]:
    return [e.payload for e in events if isinstance(e, Output) and isinstance(e.payload, TextDelta)]


async def test_text_deltas_go_out_in_frames_the_first_at_once_and_none_held_back() -> None:
    queue = make_queue()
    steps = 50

    @framed(60.0)  # one frame longer than the job: only the first and the rest
    def work(ctx: TextFrames) -> str:
        for step in range(1, steps + 1):
            ctx.output(TextDelta(f"t{step} "), step, steps)
        return "done"

    job = queue.submit(work, method="M")
    events = await collect(queue, job)
    deltas = texts(events)
    assert [(d.text, d.tokens) for d in deltas] == [("t1 ", 1), ("".join(f"t{n} " for n in range(2, steps + 1)), 49)]
    outputs = [e for e in events if isinstance(e, Output)]
    assert [o.progress.step for o in outputs] == [1, steps]  # each delta with its last token's progress
    assert isinstance(events[-2], Output) and events[-1] == Succeeded("done")  # the rest before the end
    assert job.progress is not None and job.progress.step == steps
    await queue.drain(1)


async def test_without_a_frame_every_token_is_its_own_delta() -> None:
    queue = make_queue()

    @framed(0.0)
    def work(ctx: TextFrames) -> None:
        for step in (1, 2, 3):
            ctx.output(TextDelta(f"t{step}"), step, 3)

    events = await collect(queue, queue.submit(work, method="M"))
    assert texts(events) == [TextDelta("t1"), TextDelta("t2"), TextDelta("t3")]
    await queue.drain(1)


async def test_held_text_goes_out_before_other_reports_and_a_cancel() -> None:
    queue = make_queue()
    stop = threading.Event()

    @framed(60.0)
    def work(ctx: TextFrames) -> None:
        ctx.output(TextDelta("a"), 1, 10)
        ctx.output(TextDelta("b"), 2, 10)
        ctx.progress(2, 10)  # text held for the frame goes out first, in order
        ctx.output(TextDelta("c"), 3, 10)
        ctx.output(StageChanged("other"))
        ctx.output(TextDelta("d"), 4, 10)
        stop.wait(30)
        ctx.check_cancelled()

    job = queue.submit(work, method="M")
    events: list = []
    async for event in queue.events(job):
        events.append(event)
        if isinstance(event, Output) and event.payload == StageChanged("other"):
            queue.cancel(job.id)
            stop.set()
    kinds = [
        e.payload.text if isinstance(e, Output) and isinstance(e.payload, TextDelta) else type(e).__name__
        for e in events[2:]
    ]
    assert kinds == ["a", "b", "ProgressEvent", "c", "Output", "d", "CancelledEvent"]
    assert isinstance(events[4], ProgressEvent) and job.progress is not None and job.progress.step == 4
    await queue.drain(1)
