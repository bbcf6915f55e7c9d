"""Training jobs as long-lived resources: create, list, get, cancel, watch, and resume after a
restart. grpc-free; the servicer converts. The work itself is ``runner.TrainingRunner``.

A job is a ``TrainingRecord`` (persisted as its one job record, ``store.py``) plus, while this
process runs it, a ``Job`` in the training queue (for live events). Jobs always run detached.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from genmesh.errors import FailedPrecondition, GenmeshError, InvalidArgument, NotFound, Unavailable
from servers.runtime import caller, events
from servers.runtime.events import SHUTTING_DOWN, JobState
from servers.runtime.job_ids import job_owner
from servers.runtime.queue import Job, JobQueue
from servers.training.data.pairs import find_pairs
from servers.training.jobs.records import TrainingRecord
from servers.training.jobs.runner import TrainingRunner
from servers.training.jobs.store import JobRecords
from servers.training.types import EpochCompleted, TrainingSpec, resume_spec

log = structlog.get_logger(__name__)

METHOD = "CreateTrainingJob"


@dataclass(frozen=True)
class Replayed:
    """An event that happened before the Watch call (from the record, or the queue's history)."""

    event: events.JobEvent
    time: float | None = None  # when it happened (epoch seconds), where known


class TrainingManager:
    def __init__(self, queue: JobQueue, records: JobRecords, runner: TrainingRunner) -> None:
        self.queue = queue
        self.records = records
        self.runner = runner
        self._live: dict[str, TrainingRecord] = {}  # records of jobs this process knows, by id
        self._lock = threading.Lock()

    # -- create / resume ------------------------------------------------------------------
    # Queue operations run on the event loop (the queue's thread rule); object-store calls in threads.
    async def create(
        self, spec: TrainingSpec | None, *, resume_job_id: str = "", requested: dict | None = None
    ) -> TrainingRecord:
        """A new job from ``spec``, or (``resume_job_id``) one that continues a failed or cancelled
        job from its checkpoint with that job's spec (``requested`` may only raise num_epochs)."""
        record = await asyncio.to_thread(self._prepare, spec, resume_job_id, requested or {})
        # Queued first: a full queue or a draining server refuses before anything is persisted.
        self._submit(record)
        try:
            await asyncio.to_thread(self.records.save, record)
        except GenmeshError:
            self.queue.cancel(record.job_id, "its record could not be stored")
            with self._lock:
                self._live.pop(record.job_id, None)
            raise
        return record

    def _prepare(self, spec: TrainingSpec | None, resume_job_id: str, requested: dict) -> TrainingRecord:
        if spec is None and not resume_job_id:
            raise InvalidArgument("spec: required", field="spec")
        record = TrainingRecord(job_id=self.queue.new_id(), spec=spec, client_id=caller.current().client_id)  # type: ignore[arg-type]  # resume sets it
        if resume_job_id:
            previous = self.get(resume_job_id)
            if previous.state not in (JobState.FAILED, JobState.CANCELLED):
                raise FailedPrecondition(
                    f"resume_job_id: job {resume_job_id} is {previous.state}; only failed or cancelled jobs resume"
                )
            if not previous.checkpoint_key:
                raise FailedPrecondition(f"resume_job_id: job {resume_job_id} has no checkpoint to continue from")
            record.spec = resume_spec(previous.spec, requested)
            record.resumed_from_job_id = resume_job_id
            record.checkpoint_key = previous.checkpoint_key
            record.pair_names = previous.pair_names or self.records.pairs(resume_job_id)
            record.history = list(previous.history)
            record.current_epoch = previous.current_epoch
            record.best_epoch = previous.best_epoch
        self._check_data(record.spec)
        return record

    def _check_data(self, spec: TrainingSpec) -> None:
        """Refuse at once a job that would find no data (unreadable files are only found later)."""
        found, stats = find_pairs(self.runner.store, spec.dataset_prefix)
        if len(found) < 2:
            raise InvalidArgument(
                f"spec.dataset_prefix: {len(found)} complete pairs under training-data/clean|degraded/"
                f"{spec.dataset_prefix}* ({stats.clean_files} clean, {stats.degraded_files} degraded files); "
                "at least 2 are needed: generate synthetic data or upload pairs first",
                field="spec.dataset_prefix",
            )

    def _submit(self, record: TrainingRecord, *, force: bool = False) -> Job:
        job = self.queue.submit(
            lambda context: self.runner.run(record, context),
            method=METHOD,
            detached=True,
            job_id=record.job_id,
            force=force,
        )
        job.owner = record.client_id  # a job resumed at start is still its creator's
        with self._lock:
            self._live[record.job_id] = record
        return job

    async def resume_interrupted(self) -> list[str]:
        """At start: queue again every job of this replica that was queued or running when the
        server stopped (past the queue limit: they were accepted before). Another replica's jobs are
        its own to resume (ids name their replica; old ids belong to replica 0)."""
        resumed = []
        for record in reversed(await asyncio.to_thread(self.records.all)):  # oldest first keeps their order
            if not record.active or not self._resumes_here(record.job_id):
                continue
            if record.started_at is not None:  # left RUNNING: the server died; QUEUED: it drained
                record.resumed_count += 1
                record.interrupted_reason = "server restarted" if record.state is JobState.RUNNING else SHUTTING_DOWN
            record.state = JobState.QUEUED
            record.pair_names = await asyncio.to_thread(self.records.pairs, record.job_id)
            await asyncio.to_thread(self.records.save, record)
            self._submit(record, force=True)
            resumed.append(record.job_id)
            log.info("training_job_resumed", job_id=record.job_id, from_epoch=record.current_epoch)
        return resumed

    def _resumes_here(self, job_id: str) -> bool:
        owner = job_owner(job_id)
        return (owner.replica if owner is not None else 0) == self.queue.ids.replica

    # -- read -----------------------------------------------------------------------------
    def get(self, job_id: str) -> TrainingRecord:
        """The job, if the caller may see it (its owner, or admin); NOT_FOUND otherwise, as for an unknown id."""
        with self._lock:
            record = self._live.get(job_id)
        record = record if record is not None else self.records.load(job_id)
        if not caller.current().may_see(record.client_id):
            raise NotFound(f"training job {job_id!r} not found")
        return record

    def live(self, job_id: str) -> TrainingRecord | None:
        """The job if this process created or resumed it (None otherwise: its record answers); NOT_FOUND
        when the caller may not see it."""
        with self._lock:
            record = self._live.get(job_id)
        if record is not None and not caller.current().may_see(record.client_id):
            raise NotFound(f"training job {job_id!r} not found")
        return record

    def queue_job(self, job_id: str) -> Job | None:
        try:
            return self.queue.get(job_id)
        except Exception:
            return None

    def list(self, *, state: JobState | None = None, layer: int = 0) -> list[TrainingRecord]:
        stored = {record.job_id: record for record in self.records.all()}
        with self._lock:
            stored.update(self._live)
        records = sorted(stored.values(), key=lambda record: record.created_at, reverse=True)
        who = caller.current()
        return [
            r
            for r in records
            if (not state or r.state == state) and (not layer or r.spec.layer == layer) and who.may_see(r.client_id)
        ]

    # -- cancel ---------------------------------------------------------------------------
    async def cancel(self, job_id: str) -> TrainingRecord:
        record = await asyncio.to_thread(self.get, job_id)
        if not record.active:
            return record
        job = self.queue_job(job_id)
        if job is not None:
            self.queue.cancel(job_id)  # a running job stops at its next step; the runner saves it
            if not (job.terminal and record.state == "queued"):
                return record
        # Cancelled while waiting (the runner never ran), or a record no process runs (resume off,
        # another replica gone): mark it here. Its checkpoint, if any, stays for resume_job_id.
        record.state, record.cancel_reason, record.ended_at = JobState.CANCELLED, events.CANCEL_REQUESTED, time.time()
        await asyncio.to_thread(self.records.save, record)
        return record

    # -- watch ----------------------------------------------------------------------------
    async def watch(self, job_id: str) -> AsyncIterator[events.JobEvent | Replayed]:
        """What already happened (from the record), then live events until the job ends."""
        record = self.get(job_id)
        job = self.queue_job(job_id)
        from_epoch = self.runner.first_epoch_this_run(job_id)
        for epoch in record.history:
            if job is None or from_epoch is None or epoch.epoch < from_epoch:
                yield Replayed(events.Output(EpochCompleted(epoch)))
        if job is None:
            terminal = self.runner.terminal_event(record)
            if terminal is None:
                raise Unavailable(
                    f"training job {job_id} is {record.state} but not running on this server "
                    "(resume is off, or another replica has it); cancel it or resume it with resume_job_id"
                )
            yield Replayed(terminal, record.ended_at)
            return
        times = list(job.history_times)  # events() copies the history in the same loop step: these are replays
        index = 0
        async for event in self.queue.events(job):
            yield Replayed(event, times[index]) if index < len(times) else event
            index += 1
