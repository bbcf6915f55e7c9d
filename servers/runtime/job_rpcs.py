"""GetJob, CancelJob and WatchJob, the same for every service whose jobs run on one queue.

A servicer mixes this in before its generated base class, names the functions that turn a job
into its service's ``Job`` message and an event into its stream message, and keeps terminal
records (``job_records``) so finished jobs stay answerable after this process is gone::

    class ImageServicer(JobRpcs, image_pb2_grpc.ImageServiceServicer):
        job_message = staticmethod(convert.job_message)
        watch_message = staticmethod(convert.stream_event)

        def __init__(self, engine, queue, store):
            self.queue, self.store = queue, store
            self.keep_terminal_records()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from google.protobuf import descriptor_pool, message_factory

from genmesh.common.v1 import job_pb2
from genmesh.errors import Cancelled, NotFound, from_code
from servers.runtime.events import JobEvent
from servers.runtime.job_records import TerminalRecords
from servers.runtime.queue import Job, JobQueue
from servers.runtime.streaming import stream_job
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

CANCEL_WAIT_SECONDS = 5.0


@functools.cache
def returned_type(service: str, method: str) -> type:
    """The message class ``method`` of ``service`` ("genmesh.image.v1.ImageService") returns (or streams)."""
    rpc = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    return message_factory.GetMessageClass(rpc.output_type)


def terminal_events(service: str, recorded: Any) -> Iterator[Any]:
    """The one terminal WatchJob event of a job known only by its record, then its error as the
    stream's status (as the job's own stream ended)."""
    status = recorded.status
    event = returned_type(service, "WatchJob")(job_id=status.job_id, state=status.state)
    if status.state == job_pb2.JOB_STATE_SUCCEEDED:
        event.result.CopyFrom(recorded.result)
    elif status.state == job_pb2.JOB_STATE_FAILED:
        event.error.CopyFrom(status.error)
    elif status.state == job_pb2.JOB_STATE_CANCELLED:
        event.cancelled.CopyFrom(status.cancelled)
    yield event
    if status.state == job_pb2.JOB_STATE_FAILED:
        raise from_code(status.error.code, status.error.message)
    if status.state == job_pb2.JOB_STATE_CANCELLED:
        raise Cancelled(f"job {status.job_id} cancelled: {status.cancelled.reason}")


class JobRpcs:
    queue: JobQueue
    store: ObjectStore
    job_message: Callable[[Job], Any]
    watch_message: Callable[[Job, JobEvent], Any]  # one stream event, as the service's own stream sends it
    records: TerminalRecords | None = None

    def keep_terminal_records(self) -> None:
        """Write each job's final ``Job`` message to the object store once it ended."""
        self.records = TerminalRecords(self.store)
        self._saving: set[asyncio.Future[None]] = set()
        self.queue.on_terminal.append(self._save_record)

    def _save_record(self, job: Job) -> None:
        assert self.records is not None
        saving = asyncio.get_running_loop().run_in_executor(None, self.records.save, job.id, self.job_message(job))
        self._saving.add(saving)  # keep a reference until it is done
        saving.add_done_callback(self._saving.discard)

    async def _recorded(self, job_id: str, missing: NotFound) -> Any:
        """The job's terminal record, or ``missing`` raised when it has none."""
        if self.records is None or not self.queue.service:  # a queue without a proto service: no record type
            raise missing
        recorded = await asyncio.to_thread(self.records.load, job_id, returned_type(self.queue.service, "GetJob"))
        if recorded is None:
            raise missing
        return recorded

    async def GetJob(self, request: Any, context: Any) -> Any:
        """The job (queued, running, or finished: from memory within the retention time, then from its
        record in the object store); NOT_FOUND otherwise."""
        job_id = validate_job_id(request.job_id)
        try:
            return self.job_message(self.queue.get(job_id))
        except NotFound as missing:
            return await self._recorded(job_id, missing)

    async def CancelJob(self, request: Any, context: Any) -> Any:
        """Cancel a queued or running job and return it once it stopped (a running job stops within
        a step; after ``CANCEL_WAIT_SECONDS`` it is returned as it is); a finished one is unchanged."""
        job_id = validate_job_id(request.job_id)
        try:
            job = self.queue.cancel(job_id)
        except NotFound as missing:
            return await self._recorded(job_id, missing)  # it finished: cancelling changes nothing
        if not job.terminal:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_terminal(job), CANCEL_WAIT_SECONDS)
        return self.job_message(job)

    async def WatchJob(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """The job's events so far, then live ones until it ends (never cancels it); a job known only
        by its record answers one terminal event."""
        job_id = validate_job_id(request.job_id)
        try:
            job = self.queue.get(job_id)
        except NotFound as missing:
            recorded = await self._recorded(job_id, missing)
            for message in terminal_events(self.queue.service, recorded):
                yield message
            return
        async for message in stream_job(self.queue, job, self.watch_message, owns_job=False):
            yield message

    async def _until_terminal(self, job: Job) -> None:
        async for _ in self.queue.events(job):
            pass
