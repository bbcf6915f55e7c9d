"""TrainingService: proto in, manager / job, proto out. Validation lives in convert.py.

The job RPCs every service has (GetJob, CancelJob, WatchJob, ListJobs; ``runtime/job_rpcs.py``)
serve the tasks ("tsk-...", on the tasks queue) and the training jobs ("trn-..."), whose records
are the same shared job records: GetJob answers either from memory while this process holds it,
else from its record. A training job's cancel goes to the manager (it may have to mark a record
no process runs), and ListJobs lists both."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator

from google.protobuf import struct_pb2

from genmesh.errors import FailedPrecondition, InvalidArgument, NotFound, require_range
from genmesh.training.v1 import training_pb2, training_pb2_grpc
from servers.runtime.convert import STATES
from servers.runtime.events import Succeeded
from servers.runtime.job_listing import JobQuery, Listed, position
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import Job, JobContext, JobQueue
from servers.runtime.streaming import stream_job
from servers.training import registry
from servers.training.api import convert
from servers.training.data.synthetic import SyntheticSpec
from servers.training.jobs.manager import Replayed, TrainingManager
from servers.training.jobs.records import TrainingRecord
from servers.training.jobs.store import TRAINING_PREFIX
from servers.training.reports import plot_key, report_keys
from servers.training.tasks.models import ModelTasks, RestoreRequest
from servers.training.tasks.synthetic import run_synthetic
from servers.training.types import default_architecture, validate_dataset_prefix
from storage.buckets import TRAINING_OUTPUTS
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

SERVICE_NAME = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
PLOTS = {"loss": "Loss per epoch", "psnr": "Validation PSNR per epoch", "ssim": "Validation SSIM per epoch",
         "accuracy": "Validation accuracy per epoch"}  # fmt: skip


def is_training_job(job_id: str) -> bool:
    return job_id.startswith(f"{TRAINING_PREFIX}-")


class TrainingServicer(JobRpcs, training_pb2_grpc.TrainingServiceServicer):
    job_message = staticmethod(convert.task_job)
    watch_message = staticmethod(convert.task_watch_event)

    def __init__(
        self, manager: TrainingManager, tasks: JobQueue, models: ModelTasks, store: ObjectStore, *, device: str = "cpu"
    ) -> None:
        self.default_architecture = default_architecture(device)
        self.manager = manager
        self.tasks = self.queue = tasks
        self.models = models
        self.store = store
        self.keep_terminal_records()
        manager.queue.describe = self._ended_training_job  # what a training job's completion webhook posts

    def _ended_training_job(self, job: Job) -> training_pb2.Job:
        message = convert.training_job_as_job(self.manager.get(job.id), job)
        if message.status.state != STATES[job.state]:  # cancelled while queued: the
            message.status.state = message.training_job.state = STATES[job.state]  # record follows
            if job.cancel_reason:
                message.status.cancelled.reason = message.training_job.cancelled.reason = job.cancel_reason
        return message

    # -- every job: tasks through the shared job RPCs, training jobs through the manager -------
    async def GetJob(self, request, context) -> training_pb2.Job:
        job_id = validate_job_id(request.job_id)
        live = self.manager.live(job_id) if is_training_job(job_id) else None
        if live is None:  # a task, or a training job from its record (the same for both)
            return await super().GetJob(request, context)
        return await self.with_deliveries(convert.training_job_as_job(live, self.manager.queue_job(job_id)))

    async def CancelJob(self, request, context) -> training_pb2.Job:
        job_id = validate_job_id(request.job_id)
        if is_training_job(job_id):
            return convert.training_job_as_job(await self.manager.cancel(job_id), self.manager.queue_job(job_id))
        return await super().CancelJob(request, context)

    async def WatchJob(self, request, context) -> AsyncIterator[training_pb2.WatchJobResponse]:
        if is_training_job(validate_job_id(request.job_id)):
            raise InvalidArgument(
                f"job_id: {request.job_id} is a training job: watch it with WatchTrainingJob", field="job_id"
            )
        async for message in super().WatchJob(request, context):
            yield message

    async def _more_listed(self, query: JobQuery) -> list[Listed]:
        # Every training record is read per call (as ListTrainingJobs does): hours-long jobs are few.
        records = await asyncio.to_thread(self.manager.list)  # the caller's, or everyone's for an admin
        return [
            Listed(position(record.created_at, record.job_id), record.job_id, record.state.value,
                   "CreateTrainingJob", record.client_id, record)
            for record in records
        ]  # fmt: skip

    async def _listed_message(self, listed: Listed):
        if isinstance(listed.source, TrainingRecord):
            return convert.training_job_as_job(listed.source, self.manager.queue_job(listed.job_id))
        return await super()._listed_message(listed)

    # -- synthetic data ------------------------------------------------------------------------
    def _synthetic(self, spec: SyntheticSpec, context: JobContext) -> training_pb2.SyntheticDataResult:
        return convert.synthetic_result(run_synthetic(self.store, spec, context))

    async def GenerateSyntheticData(
        self, request, context
    ) -> AsyncIterator[training_pb2.GenerateSyntheticDataResponse]:
        spec = convert.synthetic_spec(request)
        job = self.tasks.submit(functools.partial(self._synthetic, spec), method="GenerateSyntheticData")
        events = functools.partial(convert.task_event, training_pb2.GenerateSyntheticDataResponse, "generating")
        async for event in stream_job(self.tasks, job, events):
            yield event

    # -- training jobs -------------------------------------------------------------------------
    def _message(self, record: TrainingRecord) -> training_pb2.TrainingJob:
        return convert.training_job(record, self.manager.queue_job(record.job_id))

    async def CreateTrainingJob(self, request, context) -> training_pb2.TrainingJob:
        if request.resume_job_id:
            validate_job_id(request.resume_job_id, "resume_job_id")
            requested = convert.requested_fields(request.spec)
            spec = None
        else:
            spec = convert.training_spec(request.spec, self.default_architecture)
            requested = None
        record = await self.manager.create(spec, resume_job_id=request.resume_job_id, requested=requested)
        return self._message(record)

    async def GetTrainingJob(self, request, context) -> training_pb2.TrainingJob:
        record = await asyncio.to_thread(self.manager.get, validate_job_id(request.job_id))
        return self._message(record)

    async def ListTrainingJobs(self, request, context) -> training_pb2.ListTrainingJobsResponse:
        require_range(request.layer, "layer", 0, 99)
        convert.check_page_request(request.page_size, request.page_token)
        state = convert.STATE_ENUMS.get(request.state)
        records = await asyncio.to_thread(self.manager.list, state=state, layer=request.layer)
        page, next_token = convert.paginate(records, request.page_size, request.page_token, default_size=50)
        return training_pb2.ListTrainingJobsResponse(
            training_jobs=[self._message(record) for record in page], next_page_token=next_token
        )

    async def CancelTrainingJob(self, request, context) -> training_pb2.TrainingJob:
        record = await self.manager.cancel(validate_job_id(request.job_id))
        return self._message(record)

    async def _result(self, record: TrainingRecord) -> training_pb2.TrainingResult:
        info = await asyncio.to_thread(registry.get_model, self.store, record.model_id)
        return training_pb2.TrainingResult(
            model_id=record.model_id,
            model=convert.registered_model(info),
            best_metrics=convert.epoch_message(record.best),
        )

    async def WatchTrainingJob(self, request, context) -> AsyncIterator[training_pb2.WatchTrainingJobResponse]:
        job_id = validate_job_id(request.job_id)
        record = await asyncio.to_thread(self.manager.get, job_id)
        async for item in self.manager.watch(job_id):
            replayed = isinstance(item, Replayed)
            event = item.event if isinstance(item, Replayed) else item
            record = self.manager.get(job_id) if not replayed else record
            result = await self._result(record) if isinstance(event, Succeeded) else None
            when = item.time if isinstance(item, Replayed) else None
            yield convert.watch_event(record, self.manager.queue_job(job_id), event, replayed, result, when)

    # -- reports and models --------------------------------------------------------------------
    async def GetTrainingReport(self, request, context) -> training_pb2.TrainingReport:
        job_id = validate_job_id(request.job_id)
        return await asyncio.to_thread(self._report, job_id, request.return_inline)

    def _report(self, job_id: str, inline: bool) -> training_pb2.TrainingReport:
        record = self.manager.get(job_id)
        text_key, json_key = report_keys(job_id)
        try:
            text, data = (
                self.store.get_bytes(TRAINING_OUTPUTS, text_key),
                self.store.get_bytes(TRAINING_OUTPUTS, json_key),
            )
        except NotFound:
            raise FailedPrecondition(
                f"job {job_id} has no report yet (it is {record.state}; a report is written when a job ends "
                "after at least one epoch)"
            ) from None
        structured = struct_pb2.Struct()
        structured.update(json.loads(data))
        plots = []
        for name, title in PLOTS.items():
            key = plot_key(job_id, name)
            if self.store.exists(TRAINING_OUTPUTS, key):
                stored = self.store.stat(TRAINING_OUTPUTS, key)
                png = self.store.get_bytes(TRAINING_OUTPUTS, key) if inline else None
                plots.append(
                    training_pb2.ReportPlot(name=name, title=title, artifact=convert.common.artifact(stored, png))
                )
        text_stored, json_stored = (
            self.store.stat(TRAINING_OUTPUTS, text_key),
            self.store.stat(TRAINING_OUTPUTS, json_key),
        )
        return training_pb2.TrainingReport(
            job_id=job_id,
            text=text.decode(),
            data=structured,
            text_artifact=convert.common.artifact(text_stored, text if inline else None),
            json_artifact=convert.common.artifact(json_stored, data if inline else None),
            plots=plots,
            create_time=convert.timestamp(record.ended_at),
        )

    async def ListModels(self, request, context) -> training_pb2.ListModelsResponse:
        require_range(request.layer, "layer", 0, 99)
        convert.check_page_request(request.page_size, request.page_token)
        models = await asyncio.to_thread(registry.list_models, self.store, request.layer or None)
        page, next_token = convert.paginate(models, request.page_size, request.page_token, default_size=100)
        return training_pb2.ListModelsResponse(
            models=[convert.registered_model(info) for info in page], next_page_token=next_token
        )

    # -- evaluation and restore ----------------------------------------------------------------
    async def EvaluateModel(self, request, context) -> training_pb2.EvaluateModelResponse:
        registry.parse_model_id(request.model_id)
        validate_dataset_prefix(request.dataset_prefix, "dataset_prefix")
        max_pairs = request.max_pairs if request.HasField("max_pairs") else None
        if max_pairs is not None:
            require_range(max_pairs, "max_pairs", 1, 100_000)

        def work(job_context: JobContext) -> training_pb2.EvaluateModelResponse:
            outcome = self.models.evaluate(request.model_id, request.dataset_prefix, max_pairs, job_context)
            return convert.evaluate_response(outcome)

        job = self.tasks.submit(work, method="EvaluateModel")
        result = None
        async for event in stream_job(self.tasks, job, lambda _job, event: event):
            if isinstance(event, Succeeded):
                result = event.result
        return result

    def _restore(self, request: RestoreRequest, context: JobContext) -> training_pb2.RestoreResult:
        return convert.restore_result(self.models.restore(request, context), request.return_inline)

    async def RestoreImage(self, request, context) -> AsyncIterator[training_pb2.RestoreImageResponse]:
        domain = convert.restore_request(request)
        await asyncio.to_thread(registry.get_model, self.store, domain.model_id)  # NOT_FOUND before queueing
        job = self.tasks.submit(functools.partial(self._restore, domain), method="RestoreImage")
        events = functools.partial(convert.task_event, training_pb2.RestoreImageResponse, "restoring")
        async for event in stream_job(self.tasks, job, events):
            yield event
