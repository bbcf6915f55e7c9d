"""Jobs: a bounded queue, one worker thread per device, progress bridged into asyncio.

Engines run in worker threads (they block on llama.cpp or torch). They report through a
``JobContext``; every report becomes an event that is appended to the job's history and fanned out
to its subscribers on the asyncio loop, so any number of clients can watch a job and a late
watcher first replays what already happened. Observers (the server attaches its metrics) are told
of each job's lifecycle; the queue knows nothing of them. Nothing here imports grpc.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from genmesh.errors import Cancelled, GenmeshError, NotFound, ResourceExhausted, Unavailable
from servers.runtime import caller
from servers.runtime.errors import as_genmesh_error
from servers.runtime.events import (
    CANCEL_REQUESTED,
    SHUTTING_DOWN,
    TERMINAL_EVENTS,
    CancelledEvent,
    Failed,
    JobEvent,
    JobState,
    Output,
    Payload,
    Preview,
    Progress,
    ProgressEvent,
    Queued,
    Started,
    Succeeded,
)
from servers.runtime.job_ids import JobIds
from servers.runtime.webhooks import gate

log = structlog.get_logger(__name__)

RECORD_SNAPSHOT_SECONDS = 10.0  # how long a worker waits for the loop to copy its finished job


@dataclass
class Job:
    """One unit of work. Mutated only on the event loop thread (through ``JobQueue._publish``)."""

    id: str
    method: str
    detached: bool
    work: Callable[[JobContext], Any]
    state: JobState = JobState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    queue_position: int = 0
    progress: Progress | None = None
    result: Any = None  # the service's result message once SUCCEEDED
    error: Failed | None = None
    cancel_reason: str | None = None
    owner: str = ""  # the client id of the caller that submitted it ("" without the gateway)
    parent: str = ""  # the job it is a step of (an agent job's stage), "" for a job a client asked for
    notify: gate.Notify | None = None  # its completion webhook, checked before it was queued
    # The submitting call's log context (request id, client id), re-bound in the worker thread.
    log_context: dict[str, Any] = field(default_factory=dict)
    history: list[JobEvent] = field(default_factory=list)
    history_times: list[float] = field(default_factory=list)  # when each history event happened (epoch s)
    # Set from any thread; the engine polls it between steps (tokens, denoising steps, batches).
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    _reason: str = CANCEL_REQUESTED
    _subscribers: set[asyncio.Queue[JobEvent]] = field(default_factory=set)

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class JobContext:
    """What an engine sees of its job (a ``servers.runtime.events.Reporter``): cancellation and
    progress reporting. Thread-safe."""

    def __init__(
        self, job: Job, publish: Callable[[Job, JobEvent], None], device: str, queued_seconds: float = 0.0
    ) -> None:
        self.job_id = job.id
        self.device = device
        self.queued_seconds = queued_seconds
        self._job = job
        self._publish = publish
        self._started = time.monotonic()
        self._pace_from: tuple[float, int, int] | None = None  # (time, step, total) of the first work reported

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_requested.is_set()

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if the job was cancelled; engines call it between steps."""
        if self._job.cancel_requested.is_set():
            raise Cancelled(self._job._reason)

    def make_progress(
        self, step: int, total_steps: int, preview: Preview | None = None, eta_seconds: float | None = None
    ) -> Progress:
        """The ETA extrapolates the pace since the first work was reported: what came before it (a
        model load, the prompt, setting up) does not recur for every step left. A new total (another
        phase) starts a new measure; until a second report, the pace since the start stands in."""
        now = time.monotonic()
        elapsed = now - self._started
        eta = 0.0
        if eta_seconds is not None:  # the use case knows better (a plan of unlike stages)
            eta = max(0.0, eta_seconds)
        elif step > 0:
            since = self._pace_from
            if since is None or since[2] != total_steps or step < since[1]:
                since = self._pace_from = (now, step, total_steps)
            pace = (now - since[0]) / (step - since[1]) if step > since[1] else elapsed / step
            eta = pace * max(0, total_steps - step)
        return Progress(step, total_steps, elapsed, eta, preview)

    def progress(self, step: int, total_steps: int, preview: Preview | None = None) -> None:
        self._publish(self._job, ProgressEvent(self.make_progress(step, total_steps, preview)))

    def output(
        self,
        payload: Payload,
        step: int | None = None,
        total_steps: int | None = None,
        preview: Preview | None = None,
        eta_seconds: float | None = None,
    ) -> None:
        """A piece of the result (or a stage change), with the progress it brings when known."""
        known = step is not None and total_steps is not None
        progress = self.make_progress(step, total_steps, preview, eta_seconds) if known else None
        self.publish_output(payload, progress)

    def publish_output(self, payload: Payload, progress: Progress | None) -> None:
        """``output`` with its progress already measured (e.g. when the payload was made)."""
        self._publish(self._job, Output(payload, progress))


class QueueObserver(Protocol):
    """Told of each job's lifecycle on the event loop thread (never per progress report)."""

    def queued(self, job: Job) -> None: ...

    def started(self, job: Job, queued_seconds: float) -> None: ...

    def output(self, job: Job, payload: Payload) -> None: ...

    def finished(self, job: Job) -> None: ...


class JobQueue:
    """A bounded FIFO of jobs served by one worker thread per device.

    ``submit`` answers ``ResourceExhausted`` at once when ``max_queued`` jobs already wait.
    Finished jobs stay readable for ``retention_seconds`` (and at most ``max_retained``).
    """

    def __init__(
        self,
        *,
        name: str,
        id_prefix: str,
        devices: list[str],
        max_queued: int,
        retention_seconds: float = 3600.0,
        max_retained: int = 1000,
        drain_seconds: float | None = None,
        service: str = "",
        ids: JobIds | None = None,
    ) -> None:
        if not devices:
            raise ValueError("a job queue needs at least one device")
        self.name = name
        self.id_prefix = id_prefix
        self.devices = devices
        self.max_queued = max_queued
        self.retention_seconds = retention_seconds
        self.max_retained = max_retained
        # How long a drain lets running jobs finish; None: the server's setting. Queues of
        # checkpointed hours-long jobs use 0: they stop at once and resume after the restart.
        self.drain_seconds = drain_seconds
        # The proto service ("genmesh.image.v1.ImageService"): Job.method is "<service>/<RPC>".
        self.service = service
        self.ids = ids or JobIds()
        # Called on the loop once a job ended, after its watchers got the terminal event.
        self.on_terminal: list[Callable[[Job], None]] = []
        # Writes a job's durable record (blocking, never raises; ``job_rpcs`` sets it), given a copy
        # of the job in its terminal state. A job that ran has it written on its worker BEFORE its
        # terminal event goes out, so whoever receives the result can read the record at once; a
        # job that ended without running (cancelled while queued, drained) has it written off the
        # loop after its event (it has no result to read).
        self.record: Callable[[Job], None] | None = None
        self.observers: list[QueueObserver] = []
        # Completion webhooks (servers/runtime/webhooks): the service's ``Job`` message of a job (set
        # by its servicer), whether jobs of this queue resume after a restart (training), and the
        # server's dispatcher, when webhooks are on.
        self.describe: Callable[[Job], Any] | None = None
        self.resumes_jobs = False
        self.webhooks: Any = None
        self._jobs: dict[str, Job] = {}
        self._pending: collections.deque[Job] = collections.deque()
        self._calls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._accepting = True
        self._closed = False
        self._running: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._counter = itertools.count()
        self._writing: set[asyncio.Future[None]] = set()

    @property
    def depth(self) -> int:
        """Jobs waiting now."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Jobs running on the workers now."""
        return len(self._running)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._idle.set()
        for device in self.devices:
            thread = threading.Thread(target=self._worker, args=(device,), name=f"{self.name}-{device}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_accepting(self) -> None:
        self._accepting = False

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, cancel what still waits, let running jobs finish for up to ``timeout``
        seconds, then cancel them too. Returns True when everything ended in time."""
        self.stop_accepting()
        with self._cond:
            waiting = list(self._pending)
            self._pending.clear()
        for job in waiting:
            job._reason = SHUTTING_DOWN
            self._publish_now(job, CancelledEvent(SHUTTING_DOWN))
        try:
            if not self._idle.is_set():
                await asyncio.wait_for(self._idle.wait(), timeout)
            clean = True
        except TimeoutError:
            clean = False
            for job_id in list(self._running):
                self.cancel(job_id, SHUTTING_DOWN)
            try:
                await asyncio.wait_for(self._idle.wait(), 10)
            except TimeoutError:
                log.warning("drain_timeout", queue=self.name, running=sorted(self._running))
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return clean

    # -- the public API (event loop thread) ------------------------------------------------
    def submit(
        self,
        work: Callable[[JobContext], Any],
        *,
        method: str,
        detached: bool = False,
        job_id: str | None = None,
        force: bool = False,
    ) -> Job:
        """Queue ``work``. ``job_id`` re-uses an id and ``force`` skips the queue limit: a persisted
        job resuming after a restart was accepted before. Call on the event loop thread."""
        if not self._accepting:
            raise Unavailable("the server is shutting down and accepts no new jobs")
        self._prune()
        log_context = {
            key: value
            for key, value in structlog.contextvars.get_contextvars().items()
            if key in ("request_id", "client_id")
        }
        if self.service and "/" not in method:
            method = f"{self.service}/{method}"
        job = Job(
            id=job_id or self.new_id(),
            method=method,
            detached=detached,
            work=work,
            owner=caller.current().client_id,
            parent=caller.current().parent_job_id,
            notify=gate.requested(),
            log_context=log_context,
        )
        with self._cond:
            if len(self._pending) >= self.max_queued and not force:
                raise ResourceExhausted(f"the {self.name} queue is full ({self.max_queued} jobs waiting); retry later")
            self._pending.append(job)
            position = len(self._pending) - 1
            self._jobs[job.id] = job
            self._idle.clear()
            self._cond.notify()
        self._publish_now(job, Queued(position))
        for observer in self.observers:
            observer.queued(job)
        log.info("job_queued", job_id=job.id, method=method, queue_position=position, detached=detached)
        return job

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            if self.ids.lost(job_id):
                raise NotFound(
                    f"job {job_id!r} was lost: the {self.name} replica {self.ids.replica} that ran it restarted",
                    field="job_id",
                ) from None
            raise NotFound(
                f"job {job_id!r} not found (finished jobs are kept for a limited time)", field="job_id"
            ) from None

    def jobs(self) -> list[Job]:
        """Every job this queue holds now: waiting, running, and finished within the retention time."""
        return list(self._jobs.values())

    def cancel(self, job_id: str, reason: str = CANCEL_REQUESTED) -> Job:
        """Cancel a queued job at once, or ask a running one to stop at its next step."""
        job = self.get(job_id)
        if job.terminal:
            return job
        with self._cond:
            was_pending = job in self._pending
            if was_pending:
                self._pending.remove(job)
        job._reason = reason
        job.cancel_requested.set()
        if was_pending:
            self._publish_now(job, CancelledEvent(reason))
            self._announce_positions()
        log.info("job_cancel_requested", job_id=job.id, reason=reason, was_queued=was_pending)
        return job

    async def events(self, job: Job) -> AsyncIterator[JobEvent]:
        """Everything the job emitted so far, then live events until its terminal one."""
        replay = list(job.history)
        if job.terminal:
            for event in replay:
                yield event
            return
        inbox: asyncio.Queue[JobEvent] = asyncio.Queue()
        job._subscribers.add(inbox)  # registered in the same loop step as the copy: nothing is missed
        try:
            for event in replay:
                yield event
            while True:
                event = await inbox.get()
                yield event
                if isinstance(event, TERMINAL_EVENTS):
                    return
        finally:
            job._subscribers.discard(inbox)

    # -- internals -------------------------------------------------------------------------
    def new_id(self) -> str:
        """A fresh job id with this queue's prefix (for resources created before they are queued)."""
        return self.ids.new(self.id_prefix)

    def _prune(self) -> None:
        cutoff = time.time() - self.retention_seconds
        finished = [job for job in self._jobs.values() if job.terminal]
        finished.sort(key=lambda job: job.ended_at or 0)
        excess = len(finished) - self.max_retained
        for index, job in enumerate(finished):
            if index < excess or (job.ended_at or 0) < cutoff:
                del self._jobs[job.id]

    def _publish(self, job: Job, event: JobEvent) -> None:
        """From any thread: hand the event to the loop."""
        assert self._loop is not None, "JobQueue.start() was not called"
        self._loop.call_soon_threadsafe(self._publish_now, job, event)

    def _publish_now(self, job: Job, event: JobEvent, ended_at: float | None = None) -> None:
        """On the loop thread: update the job, record the event, fan it out. ``ended_at``: a terminal
        event whose record the worker already wrote, with the end time recorded."""
        if job.terminal:
            return  # e.g. a late progress report after a cancel; the stream already ended
        match event:
            case Queued(position):
                job.queue_position = position
            case Started(queued_seconds):
                job.state = JobState.RUNNING
                job.started_at = time.time()
                job.queue_position = 0
                for observer in self.observers:
                    observer.started(job, queued_seconds)
            case ProgressEvent(progress):
                job.progress = progress
            case Output(payload, progress):
                if progress is not None:
                    job.progress = progress
                for observer in self.observers:
                    observer.output(job, payload)
            case Succeeded() | Failed() | CancelledEvent():
                _settle(job, event, ended_at or time.time())
        if job.terminal:
            job.cancel_requested.set()  # nothing may keep running for a finished job
        # Progress-only events are not kept (a watcher needs the latest, not all); outputs are.
        if not isinstance(event, ProgressEvent):
            job.history.append(event)
            job.history_times.append(time.time())
        for inbox in job._subscribers:
            inbox.put_nowait(event)
        if job.terminal:
            if self.record is not None and ended_at is None:  # it never ran: no result waits on it
                self._loop_record(job)
            for observer in self.observers:
                observer.finished(job)
            for hook in self.on_terminal:
                try:
                    hook(job)
                except Exception:  # a hook must never break the queue
                    log.exception("job_terminal_hook_failed", job_id=job.id)

    def _end(self, job: Job, end: JobEvent) -> None:
        """On the worker: write the job's record, then publish its terminal event (``record``)."""
        if self.record is None or self._loop is None:
            self._publish(job, end)
            return
        ended_at = time.time()
        settled: concurrent.futures.Future[Job] = concurrent.futures.Future()

        def snapshot() -> None:  # on the loop, after the events the work published before
            settled.set_result(_terminal_copy(job, end, ended_at))

        self._loop.call_soon_threadsafe(snapshot)
        try:
            ended = settled.result(timeout=RECORD_SNAPSHOT_SECONDS)
        except concurrent.futures.TimeoutError:  # the loop is that busy: end now, record after (as if queued)
            log.warning("job_record_late", job_id=job.id, waited_seconds=RECORD_SNAPSHOT_SECONDS)
            self._publish(job, end)
            return
        try:
            self.record(ended)
        except Exception:  # ``record`` never raises; if it did, the job still ends
            log.exception("job_record_not_saved", job_id=job.id)
        self._loop.call_soon_threadsafe(self._publish_now, job, end, ended_at)

    def _loop_record(self, job: Job) -> None:
        """On the loop: the record of a job that ended without running, written off the loop."""
        assert self.record is not None and self._loop is not None
        ended = _terminal_copy(job, None, job.ended_at or time.time())
        writing = self._loop.run_in_executor(None, self.record, ended)
        self._writing.add(writing)  # keep a reference until it is done
        writing.add_done_callback(self._writing.discard)

    def _announce_positions(self) -> None:
        with self._cond:
            waiting = list(self._pending)
        for position, job in enumerate(waiting):
            if job.queue_position != position:
                self._publish_now(job, Queued(position))

    def _set_idle_if_idle(self) -> None:
        """On the loop: checked here, not in the worker, so a job submitted in between keeps it busy."""
        with self._cond:
            if not self._running and not self._pending:
                self._idle.set()

    def call_on_worker(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``fn`` on a device worker thread, before the next job (e.g. loading a model at start).

        Torch's CPU kernels keep a thread team per calling thread: when loading and jobs run on
        different threads, two teams compete for the cores and every step is ~20% slower. So all
        device work, loading included, runs on the worker."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cond:
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def _take(self) -> Job | tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None:
        with self._cond:
            while not self._pending and not self._calls and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            if self._calls:
                return self._calls.popleft()
            job = self._pending.popleft()
            self._running.add(job.id)
            return job

    def _worker(self, device: str) -> None:
        structlog.contextvars.bind_contextvars(worker=threading.current_thread().name)
        while (job := self._take()) is not None:
            if isinstance(job, tuple):
                fn, future = job
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
                continue
            self._run(job, device)
            with self._cond:
                self._running.discard(job.id)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._set_idle_if_idle)

    def _run(self, job: Job, device: str) -> None:
        queued_seconds = time.time() - job.created_at
        self._publish(job, Started(queued_seconds))
        self._loop.call_soon_threadsafe(self._announce_positions)
        context = JobContext(job, self._publish, device, queued_seconds)
        started = time.monotonic()
        end: JobEvent
        with structlog.contextvars.bound_contextvars(job_id=job.id, method=job.method, **job.log_context):
            log.info("job_started", queued_seconds=round(queued_seconds, 3), device=device)
            try:
                # No cancel check around the work: engines check between steps, and a job whose
                # work finished has finished (its results are stored).
                result = job.work(context)
            except Cancelled as exc:
                log.info("job_cancelled", reason=exc.message, seconds=round(time.monotonic() - started, 3))
                end = CancelledEvent(exc.message)
            except GenmeshError as exc:
                log.info("job_failed", code=exc.code, error=exc.message, seconds=round(time.monotonic() - started, 3))
                end = Failed(exc.code, exc.message, exc.field)
            except Exception as exc:  # a bug or a library failure: log it whole, tell the caller little
                log.exception("job_crashed", seconds=round(time.monotonic() - started, 3))
                error = as_genmesh_error(exc)
                end = Failed(error.code, error.message, error.field if error.code != "INTERNAL" else None)
            else:
                log.info("job_succeeded", seconds=round(time.monotonic() - started, 3))
                end = Succeeded(result)
            self._end(job, end)


def _settle(job: Job, event: JobEvent, ended_at: float) -> None:
    """Put ``job`` in the terminal state ``event`` brings."""
    match event:
        case Succeeded(result):
            job.state, job.result = JobState.SUCCEEDED, result
        case Failed():
            job.state, job.error = JobState.FAILED, event
        case CancelledEvent(reason):
            job.state, job.cancel_reason = JobState.CANCELLED, reason
    job.ended_at = ended_at


def _terminal_copy(job: Job, end: JobEvent | None, ended_at: float) -> Job:
    """On the loop: a copy of ``job`` as it is once ``end`` is published (``None``: already terminal),
    for its record to be written from another thread while the job itself lives on."""
    ended = copy.copy(job)
    ended.history, ended.history_times = list(job.history), list(job.history_times)
    if end is not None:
        _settle(ended, end, ended_at)
    return ended
