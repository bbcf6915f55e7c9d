import datetime

from genmesh.common.v1 import artifact_pb2 as _artifact_pb2
from genmesh.common.v1 import job_pb2 as _job_pb2
from genmesh.common.v1 import media_pb2 as _media_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_LOADING_DATA: _ClassVar[Stage]
    STAGE_TRAINING: _ClassVar[Stage]
    STAGE_VALIDATING: _ClassVar[Stage]
    STAGE_SAVING: _ClassVar[Stage]
    STAGE_GENERATING: _ClassVar[Stage]
    STAGE_LOADING_MODEL: _ClassVar[Stage]
    STAGE_RESTORING: _ClassVar[Stage]

class ContentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTENT_KIND_UNSPECIFIED: _ClassVar[ContentKind]
    CONTENT_KIND_DOCUMENTS: _ClassVar[ContentKind]
    CONTENT_KIND_TEXTURES: _ClassVar[ContentKind]
    CONTENT_KIND_SHAPES: _ClassVar[ContentKind]

class Architecture(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARCHITECTURE_UNSPECIFIED: _ClassVar[Architecture]
    ARCHITECTURE_TINY: _ClassVar[Architecture]
    ARCHITECTURE_SMALL: _ClassVar[Architecture]
    ARCHITECTURE_BASE: _ClassVar[Architecture]
STAGE_UNSPECIFIED: Stage
STAGE_LOADING_DATA: Stage
STAGE_TRAINING: Stage
STAGE_VALIDATING: Stage
STAGE_SAVING: Stage
STAGE_GENERATING: Stage
STAGE_LOADING_MODEL: Stage
STAGE_RESTORING: Stage
CONTENT_KIND_UNSPECIFIED: ContentKind
CONTENT_KIND_DOCUMENTS: ContentKind
CONTENT_KIND_TEXTURES: ContentKind
CONTENT_KIND_SHAPES: ContentKind
ARCHITECTURE_UNSPECIFIED: Architecture
ARCHITECTURE_TINY: Architecture
ARCHITECTURE_SMALL: Architecture
ARCHITECTURE_BASE: Architecture

class ProgressUpdate(_message.Message):
    __slots__ = ("stage",)
    STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ...) -> None: ...

class GenerateSyntheticDataRequest(_message.Message):
    __slots__ = ("num_images", "degradation_type", "seed", "width", "height", "content_kinds", "dataset_name", "notify_url")
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KINDS_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    num_images: int
    degradation_type: str
    seed: int
    width: int
    height: int
    content_kinds: _containers.RepeatedScalarFieldContainer[ContentKind]
    dataset_name: str
    notify_url: str
    def __init__(self, num_images: _Optional[int] = ..., degradation_type: _Optional[str] = ..., seed: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., content_kinds: _Optional[_Iterable[_Union[ContentKind, str]]] = ..., dataset_name: _Optional[str] = ..., notify_url: _Optional[str] = ...) -> None: ...

class SyntheticDataResult(_message.Message):
    __slots__ = ("batch_id", "dataset_name", "dataset_prefix", "pair_count", "clean_count", "degraded_count", "manifest", "seed", "degradation_type", "content_kinds", "width", "height", "total_bytes", "total_seconds")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAIR_COUNT_FIELD_NUMBER: _ClassVar[int]
    CLEAN_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_COUNT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KINDS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    dataset_name: str
    dataset_prefix: str
    pair_count: int
    clean_count: int
    degraded_count: int
    manifest: _artifact_pb2.Artifact
    seed: int
    degradation_type: str
    content_kinds: _containers.RepeatedScalarFieldContainer[ContentKind]
    width: int
    height: int
    total_bytes: int
    total_seconds: float
    def __init__(self, batch_id: _Optional[str] = ..., dataset_name: _Optional[str] = ..., dataset_prefix: _Optional[str] = ..., pair_count: _Optional[int] = ..., clean_count: _Optional[int] = ..., degraded_count: _Optional[int] = ..., manifest: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., seed: _Optional[int] = ..., degradation_type: _Optional[str] = ..., content_kinds: _Optional[_Iterable[_Union[ContentKind, str]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., total_bytes: _Optional[int] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class GenerateSyntheticDataResponse(_message.Message):
    __slots__ = ("job_id", "state", "queued", "started", "progress_update", "result", "error", "cancelled", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _job_pb2.JobState
    queued: _job_pb2.Queued
    started: _job_pb2.Started
    progress_update: ProgressUpdate
    result: SyntheticDataResult
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    progress: _job_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., progress_update: _Optional[_Union[ProgressUpdate, _Mapping]] = ..., result: _Optional[_Union[SyntheticDataResult, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ...) -> None: ...

class TrainingJobSpec(_message.Message):
    __slots__ = ("layer", "dataset_prefix", "num_epochs", "batch_size", "learning_rate", "max_pairs", "patch_size", "validation_split", "seed", "architecture", "description")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    DATASET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    NUM_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_PAIRS_FIELD_NUMBER: _ClassVar[int]
    PATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    layer: int
    dataset_prefix: str
    num_epochs: int
    batch_size: int
    learning_rate: float
    max_pairs: int
    patch_size: int
    validation_split: float
    seed: int
    architecture: Architecture
    description: str
    def __init__(self, layer: _Optional[int] = ..., dataset_prefix: _Optional[str] = ..., num_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., max_pairs: _Optional[int] = ..., patch_size: _Optional[int] = ..., validation_split: _Optional[float] = ..., seed: _Optional[int] = ..., architecture: _Optional[_Union[Architecture, str]] = ..., description: _Optional[str] = ...) -> None: ...

class QualityMetrics(_message.Message):
    __slots__ = ("psnr", "ssim", "accuracy")
    PSNR_FIELD_NUMBER: _ClassVar[int]
    SSIM_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    psnr: float
    ssim: float
    accuracy: float
    def __init__(self, psnr: _Optional[float] = ..., ssim: _Optional[float] = ..., accuracy: _Optional[float] = ...) -> None: ...

class EpochMetrics(_message.Message):
    __slots__ = ("epoch", "train_loss", "validation_loss", "validation", "baseline", "learning_rate", "epoch_seconds", "end_time")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    train_loss: float
    validation_loss: float
    validation: QualityMetrics
    baseline: QualityMetrics
    learning_rate: float
    epoch_seconds: float
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, epoch: _Optional[int] = ..., train_loss: _Optional[float] = ..., validation_loss: _Optional[float] = ..., validation: _Optional[_Union[QualityMetrics, _Mapping]] = ..., baseline: _Optional[_Union[QualityMetrics, _Mapping]] = ..., learning_rate: _Optional[float] = ..., epoch_seconds: _Optional[float] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DatasetStats(_message.Message):
    __slots__ = ("clean_files", "degraded_files", "pairs_found", "pairs_used", "skipped_pairs", "train_pairs", "validation_pairs")
    CLEAN_FILES_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FILES_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FOUND_FIELD_NUMBER: _ClassVar[int]
    PAIRS_USED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_PAIRS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_PAIRS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_PAIRS_FIELD_NUMBER: _ClassVar[int]
    clean_files: int
    degraded_files: int
    pairs_found: int
    pairs_used: int
    skipped_pairs: int
    train_pairs: int
    validation_pairs: int
    def __init__(self, clean_files: _Optional[int] = ..., degraded_files: _Optional[int] = ..., pairs_found: _Optional[int] = ..., pairs_used: _Optional[int] = ..., skipped_pairs: _Optional[int] = ..., train_pairs: _Optional[int] = ..., validation_pairs: _Optional[int] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("job_id", "state", "spec", "queue_position", "stage", "current_epoch", "total_epochs", "progress", "history", "best_metrics", "checkpoint", "model_id", "resumed_count", "resumed_from_job_id", "dataset", "error", "cancelled", "create_time", "start_time", "end_time", "device")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    BEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RESUMED_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _job_pb2.JobState
    spec: TrainingJobSpec
    queue_position: int
    stage: Stage
    current_epoch: int
    total_epochs: int
    progress: _job_pb2.Progress
    history: _containers.RepeatedCompositeFieldContainer[EpochMetrics]
    best_metrics: EpochMetrics
    checkpoint: _artifact_pb2.Artifact
    model_id: str
    resumed_count: int
    resumed_from_job_id: str
    dataset: DatasetStats
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    device: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., queue_position: _Optional[int] = ..., stage: _Optional[_Union[Stage, str]] = ..., current_epoch: _Optional[int] = ..., total_epochs: _Optional[int] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ..., history: _Optional[_Iterable[_Union[EpochMetrics, _Mapping]]] = ..., best_metrics: _Optional[_Union[EpochMetrics, _Mapping]] = ..., checkpoint: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., model_id: _Optional[str] = ..., resumed_count: _Optional[int] = ..., resumed_from_job_id: _Optional[str] = ..., dataset: _Optional[_Union[DatasetStats, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device: _Optional[str] = ...) -> None: ...

class CreateTrainingJobRequest(_message.Message):
    __slots__ = ("spec", "resume_job_id", "notify_url")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RESUME_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    spec: TrainingJobSpec
    resume_job_id: str
    notify_url: str
    def __init__(self, spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., resume_job_id: _Optional[str] = ..., notify_url: _Optional[str] = ...) -> None: ...

class GetTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListTrainingJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state", "layer")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: _job_pb2.JobState
    layer: int
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., layer: _Optional[int] = ...) -> None: ...

class ListTrainingJobsResponse(_message.Message):
    __slots__ = ("training_jobs", "next_page_token")
    TRAINING_JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    training_jobs: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    next_page_token: str
    def __init__(self, training_jobs: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchTrainingJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class TrainingProgress(_message.Message):
    __slots__ = ("stage", "epoch", "total_epochs", "step", "steps_per_epoch", "loss")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    epoch: int
    total_epochs: int
    step: int
    steps_per_epoch: int
    loss: float
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., epoch: _Optional[int] = ..., total_epochs: _Optional[int] = ..., step: _Optional[int] = ..., steps_per_epoch: _Optional[int] = ..., loss: _Optional[float] = ...) -> None: ...

class CheckpointSaved(_message.Message):
    __slots__ = ("epoch", "checkpoint", "best")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    checkpoint: _artifact_pb2.Artifact
    best: bool
    def __init__(self, epoch: _Optional[int] = ..., checkpoint: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., best: _Optional[bool] = ...) -> None: ...

class Resumed(_message.Message):
    __slots__ = ("resumed_count", "from_epoch", "reason")
    RESUMED_COUNT_FIELD_NUMBER: _ClassVar[int]
    FROM_EPOCH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    resumed_count: int
    from_epoch: int
    reason: str
    def __init__(self, resumed_count: _Optional[int] = ..., from_epoch: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class TrainingResult(_message.Message):
    __slots__ = ("model_id", "model", "best_metrics")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model: RegisteredModel
    best_metrics: EpochMetrics
    def __init__(self, model_id: _Optional[str] = ..., model: _Optional[_Union[RegisteredModel, _Mapping]] = ..., best_metrics: _Optional[_Union[EpochMetrics, _Mapping]] = ...) -> None: ...

class WatchTrainingJobResponse(_message.Message):
    __slots__ = ("job_id", "state", "queued", "started", "progress_update", "result", "error", "cancelled", "epoch_completed", "checkpoint_saved", "resumed", "progress", "replayed", "event_time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    EPOCH_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SAVED_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _job_pb2.JobState
    queued: _job_pb2.Queued
    started: _job_pb2.Started
    progress_update: TrainingProgress
    result: TrainingResult
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    epoch_completed: EpochMetrics
    checkpoint_saved: CheckpointSaved
    resumed: Resumed
    progress: _job_pb2.Progress
    replayed: bool
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., progress_update: _Optional[_Union[TrainingProgress, _Mapping]] = ..., result: _Optional[_Union[TrainingResult, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., epoch_completed: _Optional[_Union[EpochMetrics, _Mapping]] = ..., checkpoint_saved: _Optional[_Union[CheckpointSaved, _Mapping]] = ..., resumed: _Optional[_Union[Resumed, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ..., replayed: _Optional[bool] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetTrainingReportRequest(_message.Message):
    __slots__ = ("job_id", "return_inline")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_INLINE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    return_inline: bool
    def __init__(self, job_id: _Optional[str] = ..., return_inline: _Optional[bool] = ...) -> None: ...

class ReportPlot(_message.Message):
    __slots__ = ("name", "title", "artifact")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    name: str
    title: str
    artifact: _artifact_pb2.Artifact
    def __init__(self, name: _Optional[str] = ..., title: _Optional[str] = ..., artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class TrainingReport(_message.Message):
    __slots__ = ("job_id", "text", "data", "text_artifact", "json_artifact", "plots", "create_time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TEXT_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    JSON_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    PLOTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    text: str
    data: _struct_pb2.Struct
    text_artifact: _artifact_pb2.Artifact
    json_artifact: _artifact_pb2.Artifact
    plots: _containers.RepeatedCompositeFieldContainer[ReportPlot]
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., text: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., text_artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., json_artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., plots: _Optional[_Iterable[_Union[ReportPlot, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisteredModel(_message.Message):
    __slots__ = ("model_id", "layer", "version", "create_time", "artifact", "job_id", "architecture", "parameter_count", "size_bytes", "dataset_prefix", "best_epoch", "metrics", "baseline", "previous_model_id", "delta_vs_previous")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATASET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DELTA_VS_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    layer: int
    version: int
    create_time: _timestamp_pb2.Timestamp
    artifact: _artifact_pb2.Artifact
    job_id: str
    architecture: Architecture
    parameter_count: int
    size_bytes: int
    dataset_prefix: str
    best_epoch: int
    metrics: QualityMetrics
    baseline: QualityMetrics
    previous_model_id: str
    delta_vs_previous: QualityMetrics
    def __init__(self, model_id: _Optional[str] = ..., layer: _Optional[int] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., job_id: _Optional[str] = ..., architecture: _Optional[_Union[Architecture, str]] = ..., parameter_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., dataset_prefix: _Optional[str] = ..., best_epoch: _Optional[int] = ..., metrics: _Optional[_Union[QualityMetrics, _Mapping]] = ..., baseline: _Optional[_Union[QualityMetrics, _Mapping]] = ..., previous_model_id: _Optional[str] = ..., delta_vs_previous: _Optional[_Union[QualityMetrics, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("layer", "page_size", "page_token")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    layer: int
    page_size: int
    page_token: str
    def __init__(self, layer: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[RegisteredModel]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[RegisteredModel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EvaluateModelRequest(_message.Message):
    __slots__ = ("model_id", "dataset_prefix", "max_pairs", "notify_url")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    MAX_PAIRS_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dataset_prefix: str
    max_pairs: int
    notify_url: str
    def __init__(self, model_id: _Optional[str] = ..., dataset_prefix: _Optional[str] = ..., max_pairs: _Optional[int] = ..., notify_url: _Optional[str] = ...) -> None: ...

class EvaluateModelResponse(_message.Message):
    __slots__ = ("model_id", "dataset_prefix", "pair_count", "metrics", "baseline", "improvement", "record", "total_seconds")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAIR_COUNT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    IMPROVEMENT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dataset_prefix: str
    pair_count: int
    metrics: QualityMetrics
    baseline: QualityMetrics
    improvement: QualityMetrics
    record: _artifact_pb2.Artifact
    total_seconds: float
    def __init__(self, model_id: _Optional[str] = ..., dataset_prefix: _Optional[str] = ..., pair_count: _Optional[int] = ..., metrics: _Optional[_Union[QualityMetrics, _Mapping]] = ..., baseline: _Optional[_Union[QualityMetrics, _Mapping]] = ..., improvement: _Optional[_Union[QualityMetrics, _Mapping]] = ..., record: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class RestoreImageRequest(_message.Message):
    __slots__ = ("model_id", "image_data", "image_ref", "tile_size", "tile_overlap", "output_format", "quality", "return_inline", "notify_url")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DATA_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TILE_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    RETURN_INLINE_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    image_data: bytes
    image_ref: _artifact_pb2.ObjectRef
    tile_size: int
    tile_overlap: int
    output_format: _media_pb2.ImageFormat
    quality: int
    return_inline: bool
    notify_url: str
    def __init__(self, model_id: _Optional[str] = ..., image_data: _Optional[bytes] = ..., image_ref: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., tile_size: _Optional[int] = ..., tile_overlap: _Optional[int] = ..., output_format: _Optional[_Union[_media_pb2.ImageFormat, str]] = ..., quality: _Optional[int] = ..., return_inline: _Optional[bool] = ..., notify_url: _Optional[str] = ...) -> None: ...

class RestoreResult(_message.Message):
    __slots__ = ("image", "model_id", "width", "height", "tile_count", "tile_size", "tile_overlap", "total_seconds")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TILE_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    image: _artifact_pb2.Artifact
    model_id: str
    width: int
    height: int
    tile_count: int
    tile_size: int
    tile_overlap: int
    total_seconds: float
    def __init__(self, image: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., model_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., tile_count: _Optional[int] = ..., tile_size: _Optional[int] = ..., tile_overlap: _Optional[int] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class RestoreImageResponse(_message.Message):
    __slots__ = ("job_id", "state", "queued", "started", "progress_update", "result", "error", "cancelled", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _job_pb2.JobState
    queued: _job_pb2.Queued
    started: _job_pb2.Started
    progress_update: ProgressUpdate
    result: RestoreResult
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    progress: _job_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., progress_update: _Optional[_Union[ProgressUpdate, _Mapping]] = ..., result: _Optional[_Union[RestoreResult, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("synthetic_data", "restore", "evaluation")
    SYNTHETIC_DATA_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    synthetic_data: SyntheticDataResult
    restore: RestoreResult
    evaluation: EvaluateModelResponse
    def __init__(self, synthetic_data: _Optional[_Union[SyntheticDataResult, _Mapping]] = ..., restore: _Optional[_Union[RestoreResult, _Mapping]] = ..., evaluation: _Optional[_Union[EvaluateModelResponse, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("status", "result", "training_job")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    status: _job_pb2.JobStatus
    result: TaskResult
    training_job: TrainingJob
    def __init__(self, status: _Optional[_Union[_job_pb2.JobStatus, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., training_job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job_id", "state", "queued", "started", "progress_update", "result", "error", "cancelled", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _job_pb2.JobState
    queued: _job_pb2.Queued
    started: _job_pb2.Started
    progress_update: ProgressUpdate
    result: TaskResult
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    progress: _job_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., progress_update: _Optional[_Union[ProgressUpdate, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state", "method", "created_after", "created_before", "all_clients")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ALL_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: _job_pb2.JobState
    method: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    all_clients: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., method: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., all_clients: _Optional[bool] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
