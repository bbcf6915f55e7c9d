"""Protobuf <-> Training domain types, with the validation that names fields and ranges."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

from genmesh.common.v1 import artifact_pb2, job_pb2, media_pb2
from genmesh.errors import InvalidArgument, require, require_range
from genmesh.training.v1 import training_pb2
from servers.media.images import ImageFormat
from servers.runtime import convert as common
from servers.runtime import events
from servers.runtime.convert import timestamp
from servers.runtime.events import JobState, StageChanged
from servers.runtime.queue import Job
from servers.training.data.synthetic import SyntheticSpec
from servers.training.jobs.records import TrainingRecord
from servers.training.registry import RegisteredModelInfo, parse_model_id
from servers.training.tasks.models import EvaluateOutcome, RestoreOutcome, RestoreRequest
from servers.training.tasks.synthetic import SyntheticOutcome
from servers.training.types import (
    DEFAULT_ARCHITECTURE,
    CheckpointSaved,
    DatasetStats,
    EpochCompleted,
    EpochMetrics,
    Quality,
    Resumed,
    TrainingSpec,
    random_seed,
)
from storage.buckets import TRAINING_OUTPUTS
from storage.keys import validate_bucket, validate_key

IMAGE_FORMATS = {
    media_pb2.IMAGE_FORMAT_UNSPECIFIED: ImageFormat.PNG,
    media_pb2.IMAGE_FORMAT_PNG: ImageFormat.PNG,
    media_pb2.IMAGE_FORMAT_WEBP: ImageFormat.WEBP,
    media_pb2.IMAGE_FORMAT_JPEG: ImageFormat.JPEG,
}

STATE_ENUMS = {value: state for state, value in common.STATES.items()}


def architecture_name(value: int) -> str:
    """``ARCHITECTURE_SMALL`` -> "small" (by name; the presets are ``model.restormer.ARCHITECTURES``)."""
    if value == training_pb2.ARCHITECTURE_UNSPECIFIED:
        return DEFAULT_ARCHITECTURE
    try:
        return training_pb2.Architecture.Name(value).removeprefix("ARCHITECTURE_").lower()
    except ValueError:
        raise InvalidArgument(f"spec.architecture: unknown value {value}", field="spec.architecture") from None


def architecture_value(name: str) -> int:
    """ "small" -> ``ARCHITECTURE_SMALL``; UNSPECIFIED for a name the proto does not know."""
    try:
        return training_pb2.Architecture.Value(f"ARCHITECTURE_{name.upper()}")
    except ValueError:
        return training_pb2.ARCHITECTURE_UNSPECIFIED


def stage(name: str) -> int:
    return common.stage_value(training_pb2.Stage, name)


OPTIONAL_FIELDS = ("num_epochs", "batch_size", "learning_rate", "max_pairs", "patch_size", "validation_split", "seed")


def requested_fields(spec: training_pb2.TrainingJobSpec) -> dict[str, Any]:
    """The spec fields the caller set (optional ones only when present)."""
    fields: dict[str, Any] = {}
    if spec.layer:
        fields["layer"] = spec.layer
    if spec.dataset_prefix:
        fields["dataset_prefix"] = spec.dataset_prefix
    for name in OPTIONAL_FIELDS:
        if spec.HasField(name):
            fields[name] = getattr(spec, name)
    if spec.architecture:
        fields["architecture"] = architecture_name(spec.architecture)
    if spec.description:
        fields["description"] = spec.description
    return fields


def training_spec(spec: training_pb2.TrainingJobSpec, default_architecture: str = DEFAULT_ARCHITECTURE) -> TrainingSpec:
    """The job's spec, every default resolved (the architecture by the server's device)."""
    fields = requested_fields(spec)
    fields.setdefault("seed", random_seed())
    fields.setdefault("architecture", default_architecture)
    if "layer" not in fields:
        raise InvalidArgument(
            "spec.layer: required, 1..99 (models are organised as layer_1, layer_2, ...)", field="spec.layer"
        )
    try:
        return TrainingSpec(**fields).validate()
    except InvalidArgument as exc:
        raise in_spec(exc) from None


def in_spec(exc: InvalidArgument) -> InvalidArgument:
    """The domain names a spec field bare ("layer"); the API's path to it is "spec.layer"."""
    if not exc.field or exc.field.startswith("spec."):
        return exc
    message = exc.message
    if message.startswith(exc.field):
        message = "spec." + message
    return InvalidArgument(message, field=f"spec.{exc.field}")


def spec_message(spec: TrainingSpec) -> training_pb2.TrainingJobSpec:
    fields = dataclasses.asdict(spec)  # the spec's fields are the message's, by name
    fields["architecture"] = architecture_value(spec.architecture)
    if spec.max_pairs is None:
        del fields["max_pairs"]
    return training_pb2.TrainingJobSpec(**fields)


def quality_message(value: Quality | None) -> training_pb2.QualityMetrics | None:
    if value is None:
        return None
    return training_pb2.QualityMetrics(psnr=value.psnr, ssim=value.ssim, accuracy=value.accuracy)


# The numbers an epoch's metrics and its message share by name (the message has no global_step, best).
EPOCH_NUMBERS = ("epoch", "train_loss", "validation_loss", "learning_rate", "epoch_seconds")


def epoch_message(epoch: EpochMetrics | None) -> training_pb2.EpochMetrics | None:
    if epoch is None:
        return None
    return training_pb2.EpochMetrics(
        **{name: getattr(epoch, name) for name in EPOCH_NUMBERS},
        validation=quality_message(epoch.validation),
        baseline=quality_message(epoch.baseline),
        end_time=timestamp(epoch.end_time),
    )


# -- pages (ListTrainingJobs, ListModels) ----------------------------------------------------------

MAX_PAGE_SIZE = 1000


def check_page_request(page_size: int, page_token: str) -> None:
    """Before any work: InvalidArgument naming "page_size" (0..1000) or "page_token"."""
    require_range(page_size, "page_size", 0, MAX_PAGE_SIZE)
    if page_token and not (page_token.isascii() and page_token.isdigit() and len(page_token) <= 9):
        raise InvalidArgument("page_token: not a token from a previous page", field="page_token")


def paginate(items: list, page_size: int, page_token: str, *, default_size: int) -> tuple[list, str]:
    """One page of a newest-first list: (page, next_page_token). The token is the offset of the
    next page as digits, "" on the last page; ``page_size`` 0 means ``default_size``."""
    check_page_request(page_size, page_token)
    start, size = int(page_token or 0), page_size or default_size
    more = start + size < len(items)
    return items[start : start + size], str(start + size) if more else ""


# -- training jobs ----------------------------------------------------------------------------------


# What a TrainingRecord and its TrainingJob message share by name and type.
RECORD_FIELDS = ("job_id", "current_epoch", "model_id", "resumed_count", "resumed_from_job_id")


def training_job(record: TrainingRecord, job: Job | None) -> training_pb2.TrainingJob:
    """The resource: the persisted record, with the live queue position and progress if running here."""
    checkpoint = None
    if record.checkpoint_key:
        checkpoint = artifact_pb2.Artifact(
            bucket=TRAINING_OUTPUTS,
            key=record.checkpoint_key,
            sha256=record.checkpoint_sha256,
            size_bytes=record.checkpoint_size,
            content_type="application/octet-stream",
        )
    message = training_pb2.TrainingJob(
        **{name: getattr(record, name) for name in RECORD_FIELDS},
        state=common.STATES[record.state],
        spec=spec_message(record.spec),
        stage=stage(record.stage) if record.state is JobState.RUNNING and record.stage else 0,
        total_epochs=record.spec.num_epochs,
        history=[epoch_message(epoch) for epoch in record.history],
        best_metrics=epoch_message(record.best),
        checkpoint=checkpoint,
        dataset=training_pb2.DatasetStats(**dataclasses.asdict(record.dataset)) if record.dataset else None,
        error=job_pb2.JobError(code=record.error_code, message=record.error_message) if record.error_code else None,
        cancelled=job_pb2.Cancelled(reason=record.cancel_reason) if record.cancel_reason else None,
        create_time=timestamp(record.created_at),
        start_time=timestamp(record.started_at),
        end_time=timestamp(record.ended_at),
        device=record.device if record.state is not JobState.QUEUED else "",
    )
    if job is not None and not job.terminal:
        if job.state is events.JobState.QUEUED:
            message.queue_position = job.queue_position
        message.progress.CopyFrom(common.progress_message(job.progress) or job_pb2.Progress())
    return message


def training_record(message: training_pb2.Job) -> TrainingRecord:
    """A training job back from its record (``training_job_as_job`` of it). What the messages do not
    carry comes back as: each epoch's ``global_step`` 0 and ``best`` recomputed (the highest
    validation PSNR so far), the stage only while RUNNING; pair names are stored apart."""
    job, status = message.training_job, message.status
    history, best_psnr = [], -math.inf
    for item in job.history:
        best = item.validation.psnr > best_psnr
        best_psnr = max(best_psnr, item.validation.psnr)
        history.append(epoch_metrics(item, best))
    return TrainingRecord(
        **{name: getattr(job, name) for name in RECORD_FIELDS},
        spec=training_spec_of(job.spec),
        state=STATE_ENUMS[job.state],
        created_at=seconds(job, "create_time") or 0.0,
        started_at=seconds(job, "start_time"),
        ended_at=seconds(job, "end_time"),
        stage=training_pb2.Stage.Name(job.stage).removeprefix("STAGE_").lower() if job.stage else "",
        history=history,
        best_epoch=job.best_metrics.epoch if job.HasField("best_metrics") else 0,
        checkpoint_key=job.checkpoint.key,
        checkpoint_sha256=job.checkpoint.sha256,
        checkpoint_size=job.checkpoint.size_bytes,
        dataset=DatasetStats(**{field.name: value for field, value in job.dataset.ListFields()})
        if job.HasField("dataset")
        else None,
        error_code=job.error.code,
        error_message=job.error.message,
        cancel_reason=job.cancelled.reason,
        device=job.device,
        client_id=status.client_id,
    )


def seconds(message: Any, field: str) -> float | None:
    return getattr(message, field).ToNanoseconds() / 1e9 if message.HasField(field) else None


def training_spec_of(message: training_pb2.TrainingJobSpec) -> TrainingSpec:
    """A recorded spec (every default already resolved) back as the domain's."""
    fields = {field.name: getattr(message, field.name) for field in dataclasses.fields(TrainingSpec)}
    fields["max_pairs"] = message.max_pairs if message.HasField("max_pairs") else None
    fields["architecture"] = architecture_name(message.architecture)
    fields["validation_split"] = round(message.validation_split, 6)  # a float32 on the wire: 0.2, not 0.2000000029
    return TrainingSpec(**fields)


def quality_of(message: training_pb2.QualityMetrics) -> Quality:
    return Quality(message.psnr, message.ssim, message.accuracy)


def epoch_metrics(message: training_pb2.EpochMetrics, best: bool = False) -> EpochMetrics:
    return EpochMetrics(
        **{name: getattr(message, name) for name in EPOCH_NUMBERS},
        validation=quality_of(message.validation),
        baseline=quality_of(message.baseline),
        end_time=message.end_time.ToNanoseconds() / 1e9,
        best=best,
    )


def registered_model(info: RegisteredModelInfo) -> training_pb2.RegisteredModel:
    return training_pb2.RegisteredModel(
        model_id=info.model_id,
        layer=info.layer,
        version=info.version,
        create_time=timestamp(info.created_at.timestamp()),
        artifact=artifact_pb2.Artifact(
            bucket=info.bucket,
            key=info.key,
            size_bytes=info.size_bytes,
            sha256=info.sha256,
            content_type="application/octet-stream",
        ),
        job_id=info.job_id,
        architecture=architecture_value(info.architecture),
        parameter_count=info.parameter_count,
        size_bytes=info.size_bytes,
        dataset_prefix=info.dataset_prefix,
        best_epoch=info.best_epoch,
        metrics=quality_message(info.metrics),
        baseline=quality_message(info.baseline),
        previous_model_id=info.previous_model_id,
        delta_vs_previous=quality_message(info.delta_vs_previous),
    )


@dataclass(frozen=True)
class _RecordJob:
    """A job read from its record, for the envelope fields (``common_event_fields`` reads these)."""

    id: str
    state: JobState
    progress: events.Progress | None = None


def training_progress(record: TrainingRecord, stage_name: str = "") -> training_pb2.TrainingProgress:
    """Where the job is: ``record.live`` (the step inside the epoch) while this process trains it."""
    name = stage_name or record.stage or "training"
    message = training_pb2.TrainingProgress(
        stage=stage(name),
        epoch=min(record.current_epoch + 1, record.spec.num_epochs),
        total_epochs=record.spec.num_epochs,
    )
    live = record.live
    if live is not None and live.stage == name:
        message.epoch, message.step, message.steps_per_epoch, message.loss = (
            live.epoch,
            live.step,
            live.steps,
            live.loss,
        )
    return message


def watch_event(
    record: TrainingRecord,
    job: Job | None,
    event: events.JobEvent,
    replayed: bool,
    result: training_pb2.TrainingResult | None,
    happened: float | None = None,
) -> training_pb2.WatchTrainingJobResponse:
    """One WatchTrainingJob event: the shared envelope (of the queue's job when this process runs
    it, else of the record), then the training payloads. ``happened`` is when a replayed event
    happened (a live one happens now)."""
    fields = common.common_event_fields(job or _RecordJob(record.job_id, record.state), event)
    fields["replayed"] = replayed
    fields["event_time"] = timestamp(happened if happened is not None else time.time())
    match event:
        case events.ProgressEvent():
            fields["progress_update"] = training_progress(record)
        case events.Output(payload=StageChanged(name)):
            fields["progress_update"] = training_progress(record, name)
        case events.Output(payload=EpochCompleted(epoch)):
            fields["epoch_completed"] = epoch_message(epoch)
            fields["event_time"] = timestamp(epoch.end_time)
        case events.Output(payload=CheckpointSaved(epoch, stored, best)):
            fields["checkpoint_saved"] = training_pb2.CheckpointSaved(
                epoch=epoch, checkpoint=common.artifact(stored), best=best
            )
        case events.Output(payload=Resumed(count, from_epoch, reason)):
            fields["resumed"] = training_pb2.Resumed(resumed_count=count, from_epoch=from_epoch, reason=reason)
        case events.Succeeded():
            fields["result"] = result
    return training_pb2.WatchTrainingJobResponse(**fields)


# -- synthetic data, restore, evaluate ---------------------------------------------------------------

CONTENT_KINDS = {
    training_pb2.CONTENT_KIND_DOCUMENTS: "documents",
    training_pb2.CONTENT_KIND_TEXTURES: "textures",
    training_pb2.CONTENT_KIND_SHAPES: "shapes",
}
CONTENT_KIND_ENUMS = {name: value for value, name in CONTENT_KINDS.items()}


def synthetic_spec(request: training_pb2.GenerateSyntheticDataRequest) -> SyntheticSpec:
    kinds = []
    for value in request.content_kinds:
        if value not in CONTENT_KINDS:
            raise InvalidArgument(
                "content_kinds: each must be CONTENT_KIND_DOCUMENTS, _TEXTURES or _SHAPES", field="content_kinds"
            )
        kinds.append(CONTENT_KINDS[value])
    spec = SyntheticSpec(
        num_images=request.num_images if request.HasField("num_images") else None,
        degradation_type=request.degradation_type,
        seed=request.seed if request.HasField("seed") else None,
        width=request.width if request.HasField("width") else None,
        height=request.height if request.HasField("height") else None,
        content_kinds=tuple(kinds),
        dataset_name=request.dataset_name,
    )
    return spec.resolve()


def synthetic_result(outcome: SyntheticOutcome) -> training_pb2.SyntheticDataResult:
    spec = outcome.spec
    return training_pb2.SyntheticDataResult(
        batch_id=outcome.batch_id,
        dataset_name=spec.dataset_name,
        dataset_prefix=outcome.dataset_prefix,
        pair_count=outcome.pair_count,
        clean_count=outcome.pair_count,
        degraded_count=outcome.pair_count,
        manifest=common.artifact(outcome.manifest),
        seed=spec.seed,
        degradation_type=spec.degradation_type,
        content_kinds=[CONTENT_KIND_ENUMS[kind] for kind in spec.content_kinds],
        width=spec.width,
        height=spec.height,
        total_bytes=outcome.total_bytes,
        total_seconds=outcome.total_seconds,
    )


def task_event(response_type: type, progress_stage: str, job: Job, event: events.JobEvent):
    """An event of GenerateSyntheticData or RestoreImage (same envelope); plain progress events mean
    ``progress_stage`` (pairs generated, tiles restored)."""
    fields = common.common_event_fields(job, event)
    match event:
        case events.ProgressEvent():
            fields["progress_update"] = training_pb2.ProgressUpdate(stage=stage(progress_stage))
        case events.Output(payload=StageChanged(name)):
            fields["progress_update"] = training_pb2.ProgressUpdate(stage=stage(name))
        case events.Succeeded(result=result):
            fields["result"] = result
    return response_type(**fields)


def restore_request(message: training_pb2.RestoreImageRequest) -> RestoreRequest:
    parse_model_id(message.model_id)
    source = message.WhichOneof("image")
    require(source is not None, "image_data", "an image is required (image_data or image_ref)")
    tile = message.tile_size if message.HasField("tile_size") else 512
    require(
        tile == 0 or (64 <= tile <= 4096 and tile % 8 == 0),
        "tile_size",
        f"0, or 64..4096 and a multiple of 8 (got {tile})",
    )
    overlap = message.tile_overlap if message.HasField("tile_overlap") else 32
    if tile:  # 0 runs the whole image: no tiles, no overlap
        require(0 <= overlap <= tile // 2, "tile_overlap", f"must be 0..tile_size/2 = {tile // 2} (got {overlap})")
    else:
        overlap = 0
    quality_value = message.quality if message.HasField("quality") else 90
    require_range(quality_value, "quality", 1, 100)
    require(message.output_format in IMAGE_FORMATS, "output_format", f"unknown format {message.output_format}")
    image_ref = None
    if source == "image_ref":
        validate_bucket(message.image_ref.bucket, "image_ref.bucket")
        image_ref = (message.image_ref.bucket, validate_key(message.image_ref.key, "image_ref.key"))
    return RestoreRequest(
        model_id=message.model_id,
        image_data=message.image_data if source == "image_data" else None,
        image_ref=image_ref,
        tile_size=tile,
        tile_overlap=overlap if tile else 0,
        output_format=IMAGE_FORMATS[message.output_format],
        quality=quality_value,
        return_inline=message.return_inline,
    )


def restore_result(outcome: RestoreOutcome, inline: bool) -> training_pb2.RestoreResult:
    return training_pb2.RestoreResult(
        image=common.artifact(outcome.stored, outcome.data if inline else None),
        model_id=outcome.model_id,
        width=outcome.width,
        height=outcome.height,
        tile_count=outcome.tile_count,
        tile_size=outcome.tile_size,
        tile_overlap=outcome.tile_overlap,
        total_seconds=outcome.total_seconds,
    )


def evaluate_response(outcome: EvaluateOutcome) -> training_pb2.EvaluateModelResponse:
    return training_pb2.EvaluateModelResponse(
        model_id=outcome.model_id,
        dataset_prefix=outcome.dataset_prefix,
        pair_count=outcome.pair_count,
        metrics=quality_message(outcome.metrics),
        baseline=quality_message(outcome.baseline),
        improvement=quality_message(outcome.metrics.minus(outcome.baseline)),
        record=common.artifact(outcome.record),
        total_seconds=outcome.total_seconds,
    )


# -- every job of the server (GetJob, CancelJob, WatchJob, ListJobs) ----------------------------------
TASK_RESULTS = {  # a task's result message -> its TaskResult field
    training_pb2.SyntheticDataResult: "synthetic_data",
    training_pb2.RestoreResult: "restore",
    training_pb2.EvaluateModelResponse: "evaluation",
}
CREATE_TRAINING_JOB = f"{training_pb2.DESCRIPTOR.services_by_name['TrainingService'].full_name}/CreateTrainingJob"


def task_result(result: Any) -> training_pb2.TaskResult | None:
    if result is None:
        return None
    return training_pb2.TaskResult(**{TASK_RESULTS[type(result)]: result})


def task_job(job: Job) -> training_pb2.Job:
    return training_pb2.Job(status=common.job_status(job), result=task_result(job.result))


def task_watch_event(job: Job, event: events.JobEvent) -> training_pb2.WatchJobResponse:
    """A task's event in WatchJob's envelope (its own stream's, with the result as a TaskResult)."""
    if isinstance(event, events.Succeeded):
        event = events.Succeeded(task_result(event.result))
    progress_stage = "generating" if job.method.endswith("/GenerateSyntheticData") else "restoring"
    return task_event(training_pb2.WatchJobResponse, progress_stage, job, event)


def training_job_as_job(record: TrainingRecord, job: Job | None) -> training_pb2.Job:
    """A training job in the shape every job RPC answers: its status, and the whole resource."""
    resource = training_job(record, job)
    status = job_pb2.JobStatus(
        job_id=record.job_id,
        state=resource.state,
        queue_position=resource.queue_position,
        error=resource.error if resource.HasField("error") else None,
        cancelled=resource.cancelled if resource.HasField("cancelled") else None,
        create_time=resource.create_time if resource.HasField("create_time") else None,
        start_time=resource.start_time if resource.HasField("start_time") else None,
        end_time=resource.end_time if resource.HasField("end_time") else None,
        detached=True,
        method=CREATE_TRAINING_JOB,
        client_id=record.client_id,
    )
    if resource.HasField("progress"):
        status.progress.CopyFrom(resource.progress)
    return training_pb2.Job(status=status, training_job=resource)
