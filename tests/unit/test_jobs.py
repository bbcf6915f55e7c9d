"""JobQueue: ordering, queue positions, a full queue, cancellation, replay, drain (real threads)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from genmesh.errors import InvalidArgument, ResourceExhausted, Unavailable
from servers.runtime.events import (
    CancelledEvent,
    Failed,
    JobState,
    Output,
    Queued,
    Started,
    Succeeded,
)
from servers.runtime.queue import JobContext, JobQueue


def make_queue(max_queued: int = 4) -> JobQueue:
    queue = JobQueue(name="test", id_prefix="t", devices=["cpu"], max_queued=max_queued)
    queue.start()
    return queue


async def collect(queue: JobQueue, job) -> list:
    return [event async for event in queue.events(job)]


def blocking_work(release: threading.Event, steps: int = 1000):
    def work(ctx: JobContext) -> str:
        for step in range(1, steps + 1):
            ctx.check_cancelled()
            ctx.output(f"piece-{step}", step, steps)
            if release.wait(0.01):
                return "done"
        return "done"

    return work


async def test_events_in_order_and_result() -> None:
    queue = make_queue()

    def work(ctx: JobContext) -> int:
        for step in (1, 2, 3):
            ctx.output(step, step, 3)
        return 42

    job = queue.submit(work, method="M")
    events = await collect(queue, job)
    assert isinstance(events[0], Queued) and events[0].queue_position == 0
    assert isinstance(events[1], Started)
    assert [e.payload for e in events if isinstance(e, Output)] == [1, 2, 3]
    assert events[-1] == Succeeded(42)
    assert job.state is JobState.SUCCEEDED and job.result == 42
    assert job.progress is not None and job.progress.fraction == 1.0
    # A late watcher replays the whole history.
    assert await collect(queue, job) == events
    await queue.drain(1)


async def test_queue_positions_update_and_full_queue_is_rejected_at_once() -> None:
    queue = make_queue(max_queued=2)
    release = threading.Event()
    running = queue.submit(blocking_work(release), method="M")
    while running.state is not JobState.RUNNING:
        await asyncio.sleep(0.01)
    second = queue.submit(blocking_work(release), method="M")
    third = queue.submit(blocking_work(release), method="M")
    assert (second.queue_position, third.queue_position) == (0, 1)
    with pytest.raises(ResourceExhausted, match="queue is full"):
        queue.submit(blocking_work(release), method="M")
    queue.cancel(second.id)
    await asyncio.sleep(0.05)
    assert second.state is JobState.CANCELLED
    assert third.queue_position == 0  # moved up when the job ahead left
    release.set()
    await collect(queue, third)
    assert third.state is JobState.SUCCEEDED
    await queue.drain(1)


async def test_cancel_running_job_stops_it_between_steps() -> None:
    queue = make_queue()
    release = threading.Event()
    job = queue.submit(blocking_work(release), method="M")
    seen = []
    async for event in queue.events(job):
        seen.append(event)
        if isinstance(event, Output) and event.payload == "piece-3":
            queue.cancel(job.id)
    assert isinstance(seen[-1], CancelledEvent) and seen[-1].reason == "cancel requested"
    assert job.state is JobState.CANCELLED
    assert len([e for e in seen if isinstance(e, Output)]) < 10  # stopped within a step or two
    await queue.drain(1)


async def test_domain_errors_keep_their_code_and_crashes_hide_details() -> None:
    queue = make_queue()

    def bad_input(ctx: JobContext) -> None:
        raise InvalidArgument("steps must be between 1 and 10 (got 99)", field="steps")

    def crash(ctx: JobContext) -> None:
        raise KeyError("secret-internal-detail")

    failed = queue.submit(bad_input, method="M")
    crashed = queue.submit(crash, method="M")
    assert (await collect(queue, failed))[-1] == Failed(
        "INVALID_ARGUMENT", "steps must be between 1 and 10 (got 99)", "steps"
    )
    last = (await collect(queue, crashed))[-1]
    assert isinstance(last, Failed) and last.code == "INTERNAL"
    assert "secret-internal-detail" not in last.message
    await queue.drain(1)


async def test_drain_rejects_new_jobs_cancels_waiting_and_lets_running_finish() -> None:
    queue = make_queue()
    release = threading.Event()
    running = queue.submit(blocking_work(release, steps=30), method="M")
    while running.state is not JobState.RUNNING:
        await asyncio.sleep(0.01)
    waiting = queue.submit(blocking_work(release), method="M")
    drained = asyncio.create_task(queue.drain(5))
    await asyncio.sleep(0.05)
    with pytest.raises(Unavailable):
        queue.submit(blocking_work(release), method="M")
    assert await drained
    assert running.state is JobState.SUCCEEDED  # ran to the end (30 short steps)
    assert waiting.state is JobState.CANCELLED and waiting.cancel_reason == "server shutting down"


async def test_force_submit_passes_the_queue_limit_for_resumed_jobs() -> None:
    queue = make_queue(max_queued=1)
    release = threading.Event()
    running = queue.submit(blocking_work(release), method="M")
    while running.state is not JobState.RUNNING:
        await asyncio.sleep(0.01)
    queue.submit(blocking_work(release), method="M")
    with pytest.raises(ResourceExhausted):
        queue.submit(blocking_work(release), method="M")
    resumed = queue.submit(blocking_work(release), method="M", job_id="t-resumed", force=True)
    assert resumed.id == "t-resumed" and queue.get("t-resumed") is resumed
    release.set()
    await queue.drain(5)


async def test_job_method_is_the_full_rpc_name() -> None:
    queue = JobQueue(
        name="image", id_prefix="img", devices=["cpu"], max_queued=1, service="genmesh.image.v1.ImageService"
    )
    queue.start()
    job = queue.submit(lambda ctx: None, method="GenerateImage")
    await collect(queue, job)
    assert job.method == "genmesh.image.v1.ImageService/GenerateImage"  # as JobStatus.method documents
    await queue.drain(1)


async def test_calls_run_on_the_worker_thread_before_the_next_job() -> None:
    queue = make_queue()
    threads: list[str] = []
    loaded = await asyncio.wrap_future(queue.call_on_worker(lambda: threads.append(threading.current_thread().name)))
    assert loaded is None
    job = queue.submit(lambda ctx: threads.append(threading.current_thread().name), method="M")
    await collect(queue, job)
    assert threads == ["test-cpu", "test-cpu"]  # loading and jobs share one thread (one torch team)

    def broken() -> None:
        raise RuntimeError("load failed")

    with pytest.raises(RuntimeError, match="load failed"):
        await asyncio.wrap_future(queue.call_on_worker(broken))
    await queue.drain(1)


async def test_the_eta_follows_the_pace_since_the_first_work_not_the_start(monkeypatch) -> None:
    """10 s of loading, then 1 s a step: after step 3 of 10 the ETA is 7 s, not (13/3) x 7."""
    queue = make_queue()
    job = queue.submit(lambda ctx: None, method="Work")
    await collect(queue, job)
    await queue.drain(5)
    clock = [100.0]
    monkeypatch.setattr("servers.runtime.queue.time.monotonic", lambda: clock[0])
    context = JobContext(job, lambda job, event: None, "cpu")
    clock[0] += 10 + 1  # the load, then the first step
    first = context.make_progress(1, 10)
    assert first.eta_seconds == pytest.approx(11 * 9)  # one report: the pace since the start stands in
    clock[0] += 2
    third = context.make_progress(3, 10)
    assert third.eta_seconds == pytest.approx(7.0) and third.elapsed_seconds == pytest.approx(13.0)
    clock[0] += 5  # a new phase with its own total measures afresh
    assert context.make_progress(1, 4).eta_seconds == pytest.approx(18 * 3)
    clock[0] += 1
    assert context.make_progress(2, 4).eta_seconds == pytest.approx(2.0)
    assert context.make_progress(0, 4).eta_seconds == 0.0


async def test_a_job_that_ran_is_recorded_before_its_terminal_event_goes_out() -> None:
    """The record (``JobQueue.record``) is written on the worker from a copy in the terminal state,
    and only then does any watcher see the end: whoever gets the result can read the record."""
    queue = make_queue()
    entered, release = threading.Event(), threading.Event()
    recorded: list[tuple] = []

    def record(ended) -> None:
        live = queue.get(ended.id)
        recorded.append((threading.current_thread().name, ended, live.state, list(live.history)))
        entered.set()
        release.wait(10)

    queue.record = record

    def work(ctx: JobContext) -> int:
        ctx.output("piece", 1, 1)
        return 42

    job = queue.submit(work, method="M")
    watching = asyncio.create_task(collect(queue, job))
    while not entered.is_set() and not watching.done():
        await asyncio.sleep(0.01)
    assert recorded, "the job ended without its record"
    thread, ended, live_state, history = recorded[0]
    assert thread == "test-cpu" and ended is not job  # on the worker, from a copy
    assert (ended.state, ended.result, ended.progress.fraction) == (JobState.SUCCEEDED, 42, 1.0)
    assert live_state is JobState.RUNNING and not isinstance(history[-1], Succeeded)  # the end waits
    assert not watching.done() and job.state is JobState.RUNNING
    release.set()
    events = await watching
    assert events[-1] == Succeeded(42) and job.ended_at == ended.ended_at  # one end time, recorded and live
    await queue.drain(1)


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
async def test_failed_and_cancelled_running_jobs_are_recorded_before_their_end(outcome: str) -> None:
    queue = make_queue()
    states: list[tuple[JobState, JobState]] = []
    queue.record = lambda ended: states.append((ended.state, queue.get(ended.id).state))
    release = threading.Event()

    def failing(ctx: JobContext) -> None:
        raise InvalidArgument("steps: must be between 1 and 150 (got 0)", field="steps")

    job = queue.submit(failing if outcome == "failed" else blocking_work(release), method="M")
    if outcome == "cancelled":
        while job.state is not JobState.RUNNING:
            await asyncio.sleep(0.01)
        queue.cancel(job.id)
    await collect(queue, job)
    assert states == [(JobState(outcome), JobState.RUNNING)]
    await queue.drain(1)


async def test_a_job_that_never_ran_is_recorded_after_its_end() -> None:
    """Cancelled while queued: its end goes out at once, its record follows off the loop."""
    queue = make_queue()
    recorded = asyncio.Event()
    ended_jobs: list = []
    loop = asyncio.get_running_loop()

    def record(ended) -> None:
        ended_jobs.append((ended, threading.current_thread() is threading.main_thread()))
        loop.call_soon_threadsafe(recorded.set)

    queue.record = record
    release = threading.Event()
    running = queue.submit(blocking_work(release), method="M")
    waiting = queue.submit(blocking_work(release), method="M")
    queue.cancel(waiting.id)
    assert waiting.state is JobState.CANCELLED  # at once, not waiting on the record
    await asyncio.wait_for(recorded.wait(), 10)
    ended, on_loop_thread = ended_jobs[0]
    assert ended.id == waiting.id and ended is not waiting and ended.state is JobState.CANCELLED
    assert not on_loop_thread
    release.set()
    await collect(queue, running)
    await queue.drain(1)
