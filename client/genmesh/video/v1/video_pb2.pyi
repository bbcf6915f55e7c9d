import datetime

from genmesh.common.v1 import artifact_pb2 as _artifact_pb2
from genmesh.common.v1 import diffusion_pb2 as _diffusion_pb2
from genmesh.common.v1 import job_pb2 as _job_pb2
from genmesh.common.v1 import model_pb2 as _model_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VideoFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIDEO_FORMAT_UNSPECIFIED: _ClassVar[VideoFormat]
    VIDEO_FORMAT_GIF: _ClassVar[VideoFormat]
    VIDEO_FORMAT_MP4: _ClassVar[VideoFormat]
    VIDEO_FORMAT_WEBP: _ClassVar[VideoFormat]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_LOADING_MODEL: _ClassVar[Stage]
    STAGE_DENOISING: _ClassVar[Stage]
    STAGE_DECODING: _ClassVar[Stage]
    STAGE_ENCODING: _ClassVar[Stage]
    STAGE_SAVING: _ClassVar[Stage]

class VideoTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIDEO_TASK_UNSPECIFIED: _ClassVar[VideoTask]
    VIDEO_TASK_TEXT_TO_VIDEO: _ClassVar[VideoTask]
    VIDEO_TASK_IMAGE_TO_VIDEO: _ClassVar[VideoTask]
    VIDEO_TASK_VIDEO_TO_VIDEO: _ClassVar[VideoTask]
VIDEO_FORMAT_UNSPECIFIED: VideoFormat
VIDEO_FORMAT_GIF: VideoFormat
VIDEO_FORMAT_MP4: VideoFormat
VIDEO_FORMAT_WEBP: VideoFormat
STAGE_UNSPECIFIED: Stage
STAGE_LOADING_MODEL: Stage
STAGE_DENOISING: Stage
STAGE_DECODING: Stage
STAGE_ENCODING: Stage
STAGE_SAVING: Stage
VIDEO_TASK_UNSPECIFIED: VideoTask
VIDEO_TASK_TEXT_TO_VIDEO: VideoTask
VIDEO_TASK_IMAGE_TO_VIDEO: VideoTask
VIDEO_TASK_VIDEO_TO_VIDEO: VideoTask

class GenerateVideoRequest(_message.Message):
    __slots__ = ("model", "motion_adapter", "prompt", "negative_prompt", "width", "height", "num_frames", "fps", "steps", "guidance_scale", "seed", "scheduler", "output_format", "return_inline", "save_frames", "preview_interval_steps", "detach", "init_image_data", "init_image_ref", "init_video_data", "init_video_ref", "strength", "prompt_schedule", "keep_alive_seconds", "loras", "notify_url")
    class PromptScheduleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MOTION_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RETURN_INLINE_FIELD_NUMBER: _ClassVar[int]
    SAVE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_INTERVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_DATA_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    INIT_VIDEO_DATA_FIELD_NUMBER: _ClassVar[int]
    INIT_VIDEO_REF_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    model: str
    motion_adapter: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    seed: int
    scheduler: _diffusion_pb2.Scheduler
    output_format: VideoFormat
    return_inline: bool
    save_frames: bool
    preview_interval_steps: int
    detach: bool
    init_image_data: bytes
    init_image_ref: _artifact_pb2.ObjectRef
    init_video_data: bytes
    init_video_ref: _artifact_pb2.ObjectRef
    strength: float
    prompt_schedule: _containers.ScalarMap[int, str]
    keep_alive_seconds: int
    loras: _containers.RepeatedCompositeFieldContainer[_diffusion_pb2.LoraWeight]
    notify_url: str
    def __init__(self, model: _Optional[str] = ..., motion_adapter: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., fps: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., scheduler: _Optional[_Union[_diffusion_pb2.Scheduler, str]] = ..., output_format: _Optional[_Union[VideoFormat, str]] = ..., return_inline: _Optional[bool] = ..., save_frames: _Optional[bool] = ..., preview_interval_steps: _Optional[int] = ..., detach: _Optional[bool] = ..., init_image_data: _Optional[bytes] = ..., init_image_ref: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., init_video_data: _Optional[bytes] = ..., init_video_ref: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., strength: _Optional[float] = ..., prompt_schedule: _Optional[_Mapping[int, str]] = ..., keep_alive_seconds: _Optional[int] = ..., loras: _Optional[_Iterable[_Union[_diffusion_pb2.LoraWeight, _Mapping]]] = ..., notify_url: _Optional[str] = ...) -> None: ...

class ProgressUpdate(_message.Message):
    __slots__ = ("stage", "frames_decoded", "total_frames")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DECODED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    frames_decoded: int
    total_frames: int
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., frames_decoded: _Optional[int] = ..., total_frames: _Optional[int] = ...) -> None: ...

class VideoParameters(_message.Message):
    __slots__ = ("model", "motion_adapter", "prompt", "negative_prompt", "width", "height", "num_frames", "fps", "steps", "guidance_scale", "seed", "scheduler", "output_format", "memory_mode", "device", "task", "strength", "init_media", "context_length", "context_stride", "prompt_schedule", "decode_chunk_size", "low_memory_retry", "loras", "defaults_note")
    class PromptScheduleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MOTION_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    INIT_MEDIA_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_STRIDE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    DECODE_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOW_MEMORY_RETRY_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_NOTE_FIELD_NUMBER: _ClassVar[int]
    model: str
    motion_adapter: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance_scale: float
    seed: int
    scheduler: _diffusion_pb2.Scheduler
    output_format: VideoFormat
    memory_mode: _diffusion_pb2.MemoryMode
    device: str
    task: VideoTask
    strength: float
    init_media: _artifact_pb2.ObjectRef
    context_length: int
    context_stride: int
    prompt_schedule: _containers.ScalarMap[int, str]
    decode_chunk_size: int
    low_memory_retry: bool
    loras: _containers.RepeatedCompositeFieldContainer[_diffusion_pb2.AppliedLora]
    defaults_note: str
    def __init__(self, model: _Optional[str] = ..., motion_adapter: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_frames: _Optional[int] = ..., fps: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., scheduler: _Optional[_Union[_diffusion_pb2.Scheduler, str]] = ..., output_format: _Optional[_Union[VideoFormat, str]] = ..., memory_mode: _Optional[_Union[_diffusion_pb2.MemoryMode, str]] = ..., device: _Optional[str] = ..., task: _Optional[_Union[VideoTask, str]] = ..., strength: _Optional[float] = ..., init_media: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., context_length: _Optional[int] = ..., context_stride: _Optional[int] = ..., prompt_schedule: _Optional[_Mapping[int, str]] = ..., decode_chunk_size: _Optional[int] = ..., low_memory_retry: _Optional[bool] = ..., loras: _Optional[_Iterable[_Union[_diffusion_pb2.AppliedLora, _Mapping]]] = ..., defaults_note: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queued_seconds", "model_load_seconds", "denoise_seconds", "decode_seconds", "encode_seconds", "save_seconds", "total_seconds")
    QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DENOISE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DECODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queued_seconds: float
    model_load_seconds: float
    denoise_seconds: float
    decode_seconds: float
    encode_seconds: float
    save_seconds: float
    total_seconds: float
    def __init__(self, queued_seconds: _Optional[float] = ..., model_load_seconds: _Optional[float] = ..., denoise_seconds: _Optional[float] = ..., decode_seconds: _Optional[float] = ..., encode_seconds: _Optional[float] = ..., save_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class VideoResult(_message.Message):
    __slots__ = ("video", "poster", "frames", "num_frames", "fps", "duration_seconds", "seed", "parameters", "timings", "record")
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    POSTER_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    video: _artifact_pb2.Artifact
    poster: _artifact_pb2.Artifact
    frames: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Artifact]
    num_frames: int
    fps: int
    duration_seconds: float
    seed: int
    parameters: VideoParameters
    timings: Timings
    record: _artifact_pb2.Artifact
    def __init__(self, video: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., poster: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[_artifact_pb2.Artifact, _Mapping]]] = ..., num_frames: _Optional[int] = ..., fps: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., seed: _Optional[int] = ..., parameters: _Optional[_Union[VideoParameters, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., record: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class GenerateVideoResponse(_message.Message):
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
    result: VideoResult
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    progress: _job_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., progress_update: _Optional[_Union[ProgressUpdate, _Mapping]] = ..., result: _Optional[_Union[VideoResult, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_model_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_model_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

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

class Job(_message.Message):
    __slots__ = ("status", "result")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    status: _job_pb2.JobStatus
    result: VideoResult
    def __init__(self, status: _Optional[_Union[_job_pb2.JobStatus, _Mapping]] = ..., result: _Optional[_Union[VideoResult, _Mapping]] = ...) -> None: ...

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
