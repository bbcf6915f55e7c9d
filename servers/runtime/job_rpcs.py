"""GetJob, CancelJob, WatchJob and ListJobs, the same for every service whose jobs run on one queue.

A servicer mixes this in before its generated base class, names the functions that turn a job
into its service's ``Job`` message and an event into its stream message, and keeps terminal
records (``job_records``) so finished jobs stay answerable after this process is gone::

    class ImageServicer(JobRpcs, image_pb2_grpc.ImageServiceServicer):
        job_message = staticmethod(convert.job_message)
        watch_message = staticmethod(convert.stream_event)

        def __init__(self, engine, queue, store):
            self.queue, self.store = queue, store
            self.keep_terminal_records()

Jobs are owned (``caller.py``): a job of another client answers NOT_FOUND, exactly as an unknown id
does, unless the caller is admin. ListJobs pages the jobs held in memory together with the index of
finished ones (``job_listing.py``) and, with replicas, the other replicas' live jobs (asked by the
forwarding interceptor).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from google.protobuf import descriptor_pool, json_format
from google.protobuf.message import Message

from genmesh.common.v1 import artifact_pb2, job_pb2
from genmesh.errors import Cancelled, InvalidArgument, NotFound, from_code
from genmesh.services import SERVICES, service_for_job
from servers.runtime import caller, job_listing
from servers.runtime.convert import STATES
from servers.runtime.events import JobEvent
from servers.runtime.job_listing import (
    JobIndex,
    JobQuery,
    Listed,
    check_page_size,
    decode_token,
    encode_token,
    merge,
    owner_filter,
    position,
    position_ms,
    rpc_name,
    time_bounds,
)
from servers.runtime.job_records import TerminalRecords, record_key
from servers.runtime.library import library_index
from servers.runtime.protos import returned_type
from servers.runtime.queue import Job, JobQueue
from servers.runtime.streaming import stream_job
from servers.runtime.webhooks.dispatcher import Delivery
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

CANCEL_WAIT_SECONDS = 5.0
ARTIFACT = artifact_pb2.Artifact.DESCRIPTOR.full_name  # carries inline bytes when asked (``data``)
STATE_VALUES = {number: state.value for state, number in STATES.items()}  # proto JobState -> "queued", ...
DELIVERY_STATES = {
    "pending": job_pb2.DELIVERY_STATE_PENDING,
    "delivered": job_pb2.DELIVERY_STATE_DELIVERED,
    "gave_up": job_pb2.DELIVERY_STATE_GAVE_UP,
}


def not_found(job_id: str) -> NotFound:
    """What an unknown id answers, and so what another client's job answers (its existence is not
    told either)."""
    return NotFound(f"job {job_id!r} not found (finished jobs are kept for a limited time)", field="job_id")


def service_folder(proto_service: str) -> str:
    """The declared name of a proto service ("text"), the index folder of its jobs."""
    return next(info.name for info in SERVICES if info.proto_service == proto_service)


def job_query(service: str, request: Any, who: caller.Caller) -> JobQuery:
    """A ListJobs request checked and turned into a query (every ListJobsRequest has the same fields)."""
    page_size = check_page_size(request.page_size)
    owner = owner_filter(request.all_clients, who, "jobs")
    if request.state not in STATE_VALUES and request.state != job_pb2.JOB_STATE_UNSPECIFIED:
        raise InvalidArgument(f"state: unknown job state {request.state}", field="state")
    method = rpc_name(request.method)
    if method:
        rpcs = descriptor_pool.Default().FindServiceByName(service).methods_by_name
        prefix = request.method.rpartition("/")[0]
        if method not in rpcs or prefix not in ("", service):
            raise InvalidArgument(
                f"method: {request.method!r} is not an RPC of {service} (one of {', '.join(rpcs)})", field="method"
            )
    after, before = time_bounds(request)
    return JobQuery(
        owner=owner,
        states=frozenset({STATE_VALUES[request.state]}) if request.state in STATE_VALUES else None,
        method=method,
        created_after_ms=after,
        created_before_ms=before,
        page_size=page_size,
        after=decode_token(request.page_token),
    )


def live_entry(job: Job) -> Listed:
    return Listed(position(job.created_at, job.id), job.id, job.state.value, rpc_name(job.method), job.owner, job)


def terminal_events(service: str, recorded: Any) -> Iterator[Any]:
    """The one terminal WatchJob event of a job known only by its record, then its error as the
    stream's status (as the job's own stream ended)."""
    status = recorded.status
    event = returned_type(service, "WatchJob")(job_id=status.job_id, state=status.state)
    if status.state == job_pb2.JOB_STATE_SUCCEEDED:
        _copy(event.result, recorded.result)
    elif status.state == job_pb2.JOB_STATE_FAILED:
        _copy(event.error, status.error)
    elif status.state == job_pb2.JOB_STATE_CANCELLED:
        _copy(event.cancelled, status.cancelled)
    yield event
    if status.state == job_pb2.JOB_STATE_FAILED:
        raise from_code(status.error.code, status.error.message)
    if status.state == job_pb2.JOB_STATE_CANCELLED:
        raise Cancelled(f"job {status.job_id} cancelled: {status.cancelled.reason}")


def _copy(target: Message, source: Message) -> None:
    """``source`` into ``target``; a service's own event type (the Agent's ``CharacterCancelled``,
    ``CharacterError``) takes the fields it shares with the common one by name."""
    if target.DESCRIPTOR is source.DESCRIPTOR:
        target.CopyFrom(source)
    else:
        json_format.ParseDict(json_format.MessageToDict(source), target, ignore_unknown_fields=True)


def points_at_record(job: Job) -> bool:
    """Whether the job's result names its record (``record_object``) in its ``record`` field."""
    result = job.result
    descriptor = getattr(result, "DESCRIPTOR", None)
    if descriptor is None or "record" not in descriptor.fields_by_name:
        return False
    return result.HasField("record") and result.record.key == record_key(job.id)


def delivery_message(delivery: Delivery) -> job_pb2.WebhookDelivery:
    message = job_pb2.WebhookDelivery(
        url=delivery.url,
        state=DELIVERY_STATES[delivery.state],
        attempts=delivery.attempts,
        last_status_code=delivery.last_status,
        last_error=delivery.last_error,
    )
    for field, value in (
        ("last_attempt_time", delivery.last_attempt_at),
        ("next_attempt_time", delivery.next_attempt_at),
    ):
        if value is not None:
            getattr(message, field).FromNanoseconds(int(value * 1e9))
    return message


def without_inline_data(message: Message) -> Message:
    """``message`` with every artifact by reference only: the bytes a request asked for inline went
    out in its stream, and a job's record, listing or webhook never repeats them."""
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE or field.message_type.full_name.startswith("google.protobuf."):
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = list(value.values()) if value_field.type == value_field.TYPE_MESSAGE else []
        else:
            items = list(value) if field.is_repeated else [value]
        for item in items:
            if item.DESCRIPTOR.full_name == ARTIFACT:
                item.ClearField("data")
            else:
                without_inline_data(item)
    return message


class JobRpcs:
    queue: JobQueue
    store: ObjectStore
    job_message: Callable[[Job], Any]
    watch_message: Callable[[Job, JobEvent], Any]  # one stream event, as the service's own stream sends it
    records: TerminalRecords | None = None

    def keep_terminal_records(self) -> None:
        """Write each job's final ``Job`` message to the object store as it ends (before its result
        goes out, ``JobQueue.record``), and index it for ListJobs."""
        index = JobIndex(self.store, service_folder(self.queue.service)) if self.queue.service else None
        self.records = TerminalRecords(self.store, index, library_index(self.store))
        self.queue.record = self._save_record
        self.queue.describe = self.job_view  # what its completion webhooks post

    def job_view(self, job: Job) -> Any:
        """The service's ``Job`` message as GetJob, ListJobs, records and webhooks carry it."""
        return without_inline_data(self.job_message(job))

    def _save_record(self, job: Job) -> None:
        """Blocking, off the loop; ``job`` is a copy in its terminal state. A result whose ``record``
        points at a record that could not be written loses that pointer."""
        assert self.records is not None
        if not self.records.save(job, self.job_view(job)) and points_at_record(job):
            job.result.ClearField("record")  # the same message the terminal event will carry

    async def _recorded(self, job_id: str, missing: NotFound) -> Any:
        """The job's terminal record, or ``missing`` raised when it has none (or the caller may not see it)."""
        if self.records is None or not self.queue.service:  # a queue without a proto service: no record type
            raise missing
        owner = service_for_job(job_id)
        if owner is None or owner.proto_service != self.queue.service:  # records share a bucket: not ours
            raise missing
        recorded = await asyncio.to_thread(self.records.load, job_id, returned_type(self.queue.service, "GetJob"))
        if recorded is None:
            raise missing
        if not caller.current().may_see(recorded.status.client_id):
            raise not_found(job_id)
        return recorded

    def _visible(self, job_id: str) -> Job:
        """The live job, if the caller may see it; NOT_FOUND as for an unknown id otherwise."""
        job = self.queue.get(job_id)
        if not caller.current().may_see(job.owner):
            raise not_found(job_id)
        return job

    async def GetJob(self, request: Any, context: Any) -> Any:
        """The job (queued, running, or finished: from memory within the retention time, then from its
        record in the object store); NOT_FOUND otherwise, and for another client's job."""
        job_id = validate_job_id(request.job_id)
        try:
            message = self.job_view(self._visible(job_id))
        except NotFound as missing:
            message = await self._recorded(job_id, missing)
        return await self.with_deliveries(message)

    async def with_deliveries(self, message: Any, *, stored: bool = True) -> Any:
        """``message`` with its job's webhook deliveries (``stored``: also those only the object store
        still knows, after a restart)."""
        webhooks = self.queue.webhooks
        if webhooks is None:
            return message
        job_id = message.status.job_id
        known = webhooks.deliveries.get(job_id)
        found = [known] if known is not None else (await webhooks.deliveries_of(job_id) if stored else [])
        del message.status.deliveries[:]
        message.status.deliveries.extend(delivery_message(delivery) for delivery in found)
        return message

    async def CancelJob(self, request: Any, context: Any) -> Any:
        """Cancel a queued or running job and return it once it stopped (a running job stops within
        a step; after ``CANCEL_WAIT_SECONDS`` it is returned as it is); a finished one is unchanged."""
        job_id = validate_job_id(request.job_id)
        try:
            job = self.queue.cancel(self._visible(job_id).id)
        except NotFound as missing:
            return await self._recorded(job_id, missing)  # it finished: cancelling changes nothing
        if not job.terminal:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_terminal(job), CANCEL_WAIT_SECONDS)
        return await self.with_deliveries(self.job_view(job), stored=False)

    async def ListJobs(self, request: Any, context: Any) -> Any:
        """A page of the caller's jobs (every client's for an admin asking ``all_clients``), newest
        first: those in memory and, from the index, those that finished before."""
        query = job_query(self.queue.service, request, caller.current())
        response_type = returned_type(self.queue.service, "ListJobs")
        live = [live_entry(job) for job in self.queue.jobs()]
        if job_listing.answering_peer.get():  # another replica merges; it reads the index itself
            waiting = [listed for listed in live if listed.state in ("queued", "running") and query.matches(listed)]
            return response_type(jobs=[self.job_view(listed.source) for listed in waiting])
        live += await self._more_listed(query)
        live += await self._peer_listed()
        stored, horizon = ([], None)
        if self.records is not None and self.records.index is not None:
            stored, horizon = await asyncio.to_thread(self.records.index.scan, query)
        page, after = merge(query, stored, horizon, live)
        messages = await asyncio.gather(*(self._listed_message(listed) for listed in page))
        response = response_type(next_page_token=encode_token(after))
        for message in messages:
            if message is not None:  # deliveries only from memory: a page costs no more store reads
                response.jobs.append(await self.with_deliveries(message, stored=False))
        return response

    async def _peer_listed(self) -> list[Listed]:
        """The queued and running jobs of the other replicas (those that answer)."""
        fetch = job_listing.peer_live_jobs.get()
        if fetch is None:
            return []
        response_type = returned_type(self.queue.service, "ListJobs")
        listed = []
        for raw in await fetch():
            for message in response_type.FromString(raw).jobs:
                status = message.status
                listed.append(
                    Listed(
                        position_ms(status.create_time.ToMilliseconds(), status.job_id),
                        status.job_id,
                        STATE_VALUES.get(status.state, ""),
                        rpc_name(status.method),
                        status.client_id,
                        message,
                    )
                )
        return listed

    async def _more_listed(self, query: JobQuery) -> list[Listed]:
        """Jobs this service holds elsewhere than its queue (Training's training jobs); none by default."""
        return []

    async def _listed_message(self, listed: Listed) -> Any:
        """The ``Job`` message of a listed job; None for an indexed job whose record is gone."""
        if isinstance(listed.source, Job):
            return self.job_view(listed.source)
        if isinstance(listed.source, Message):  # a peer's answer
            return listed.source
        assert self.records is not None
        return await asyncio.to_thread(self.records.load, listed.job_id, returned_type(self.queue.service, "GetJob"))

    async def WatchJob(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """The job's events so far, then live ones until it ends (never cancels it); a job known only
        by its record answers one terminal event."""
        job_id = validate_job_id(request.job_id)
        try:
            job = self._visible(job_id)
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
