"""Turns a job's events into a gRPC response stream, with the contracts every service keeps:
the first event at once, exactly one terminal event, the terminal error also as the gRPC status,
and cancellation when the client goes away (unless the job is detached)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from genmesh.errors import Cancelled, from_code
from servers.runtime.events import CLIENT_DISCONNECTED, CancelledEvent, Failed, JobEvent
from servers.runtime.queue import Job, JobQueue


async def stream_job(
    queue: JobQueue, job: Job, to_message: Callable[[Job, JobEvent], Any], *, owns_job: bool = True
) -> AsyncIterator[Any]:
    """Yield ``to_message(job, event)`` for every event; raise the terminal error after sending it.
    ``owns_job``: the stream that made the job (its end cancels the job unless detached); a
    watcher's stream (WatchJob) never cancels it."""
    finished = False
    try:
        async for event in queue.events(job):
            yield to_message(job, event)
            if isinstance(event, Failed):
                finished = True
                raise from_code(event.code, event.message, event.field)
            if isinstance(event, CancelledEvent):
                finished = True
                raise Cancelled(f"job {job.id} cancelled: {event.reason}")
        finished = True
    finally:
        # Reached on client disconnect too (the generator is closed or cancelled mid-await).
        if owns_job and not finished and not job.detached and not job.terminal:
            queue.cancel(job.id, CLIENT_DISCONNECTED)
