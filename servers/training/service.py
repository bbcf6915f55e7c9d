"""Wires the Training server together: storage, records, queues (training + short tasks), servicer."""

from __future__ import annotations

import asyncio

import grpc
import structlog

from genmesh.training.v1 import training_pb2_grpc
from servers.compute.compile import CompileOptions, prepare_compiling
from servers.compute.devices import configure_threads, device_label, select_device
from servers.runtime.queue import JobQueue
from servers.training.api.servicer import SERVICE_NAME, TrainingServicer
from servers.training.jobs.manager import TrainingManager
from servers.training.jobs.runner import TrainingRunner
from servers.training.jobs.store import TRAINING_PREFIX, JobRecords
from servers.training.settings import TrainingSettings
from servers.training.tasks.models import ModelTasks
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)


class TrainingService:
    name = "training"
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings
        configure_threads(settings.threads)
        self.device = device = device_label(select_device(settings.device))
        self.store = ObjectStore(settings.storage())
        # Hours-long training jobs get their own queue, so a restore or a synthetic batch never
        # waits behind one; a drain stops training at once (it resumes from its checkpoint).
        self.training_queue = JobQueue(
            name="training", id_prefix=TRAINING_PREFIX, devices=[device], max_queued=settings.max_queued_trainings,
            retention_seconds=settings.job_retention_seconds, drain_seconds=0.0, service=SERVICE_NAME,
            ids=settings.job_ids(),
        )  # fmt: skip
        self.tasks_queue = JobQueue(
            name="training-tasks", id_prefix="tsk", devices=[device], max_queued=settings.max_queued,
            retention_seconds=settings.job_retention_seconds, service=SERVICE_NAME, ids=settings.job_ids(),
        )  # fmt: skip
        self.training_queue.resumes_jobs = settings.resume_on_start  # a drain is not their end (webhooks)
        self.queues = (self.training_queue, self.tasks_queue)
        records = JobRecords(self.store)
        compile = CompileOptions(settings.compile, settings.compile_mode)
        prepare_compiling(compile, settings.resolved_compile_cache_dir())
        runner = TrainingRunner(
            self.store, records, device=device, amp=settings.amp, threads=settings.threads, compile=compile,
            channels_last=settings.channels_last,
        )  # fmt: skip
        self.manager = TrainingManager(self.training_queue, records, runner)
        self.models = ModelTasks(self.store, device=device, amp=settings.amp)

    def register(self, server: grpc.aio.Server) -> None:
        servicer = TrainingServicer(self.manager, self.tasks_queue, self.models, self.store, device=self.device)
        training_pb2_grpc.add_TrainingServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        await asyncio.to_thread(self.store.ensure_buckets)
        await asyncio.to_thread(self.manager.records.migrate_legacy)
        if self.settings.resume_on_start:
            resumed = await self.manager.resume_interrupted()
            if resumed:
                log.info("training_jobs_resumed", jobs=resumed)

    async def close(self) -> None:
        self.models.close()
