import datetime

from genmesh.common.v1 import artifact_pb2 as _artifact_pb2
from genmesh.common.v1 import diffusion_pb2 as _diffusion_pb2
from genmesh.common.v1 import job_pb2 as _job_pb2
from genmesh.common.v1 import media_pb2 as _media_pb2
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

class InpaintMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INPAINT_MODE_UNSPECIFIED: _ClassVar[InpaintMode]
    INPAINT_MODE_INPAINTING_MODEL: _ClassVar[InpaintMode]
    INPAINT_MODE_LATENT_BLEND: _ClassVar[InpaintMode]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_LOADING_MODEL: _ClassVar[Stage]
    STAGE_ENCODING_INPUT: _ClassVar[Stage]
    STAGE_DENOISING: _ClassVar[Stage]
    STAGE_DECODING: _ClassVar[Stage]
    STAGE_SAVING: _ClassVar[Stage]
INPAINT_MODE_UNSPECIFIED: InpaintMode
INPAINT_MODE_INPAINTING_MODEL: InpaintMode
INPAINT_MODE_LATENT_BLEND: InpaintMode
STAGE_UNSPECIFIED: Stage
STAGE_LOADING_MODEL: Stage
STAGE_ENCODING_INPUT: Stage
STAGE_DENOISING: Stage
STAGE_DECODING: Stage
STAGE_SAVING: Stage

class GenerateImageRequest(_message.Message):
    __slots__ = ("model", "prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "seed", "scheduler", "num_images", "init_image_data", "init_image_ref", "strength", "output_format", "quality", "return_inline", "preview_interval_steps", "detach", "keep_alive_seconds", "loras", "mask_image_data", "mask_image_ref", "notify_url")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_DATA_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    RETURN_INLINE_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_INTERVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    MASK_IMAGE_DATA_FIELD_NUMBER: _ClassVar[int]
    MASK_IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    scheduler: _diffusion_pb2.Scheduler
    num_images: int
    init_image_data: bytes
    init_image_ref: _artifact_pb2.ObjectRef
    strength: float
    output_format: _media_pb2.ImageFormat
    quality: int
    return_inline: bool
    preview_interval_steps: int
    detach: bool
    keep_alive_seconds: int
    loras: _containers.RepeatedCompositeFieldContainer[_diffusion_pb2.LoraWeight]
    mask_image_data: bytes
    mask_image_ref: _artifact_pb2.ObjectRef
    notify_url: str
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., seed: _Optional[int] = ..., scheduler: _Optional[_Union[_diffusion_pb2.Scheduler, str]] = ..., num_images: _Optional[int] = ..., init_image_data: _Optional[bytes] = ..., init_image_ref: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., strength: _Optional[float] = ..., output_format: _Optional[_Union[_media_pb2.ImageFormat, str]] = ..., quality: _Optional[int] = ..., return_inline: _Optional[bool] = ..., preview_interval_steps: _Optional[int] = ..., detach: _Optional[bool] = ..., keep_alive_seconds: _Optional[int] = ..., loras: _Optional[_Iterable[_Union[_diffusion_pb2.LoraWeight, _Mapping]]] = ..., mask_image_data: _Optional[bytes] = ..., mask_image_ref: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., notify_url: _Optional[str] = ...) -> None: ...

class ProgressUpdate(_message.Message):
    __slots__ = ("stage",)
    STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ...) -> None: ...

class GeneratedImage(_message.Message):
    __slots__ = ("index", "seed", "artifact")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    index: int
    seed: int
    artifact: _artifact_pb2.Artifact
    def __init__(self, index: _Optional[int] = ..., seed: _Optional[int] = ..., artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class ImageParameters(_message.Message):
    __slots__ = ("model", "model_family", "prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "scheduler", "seed", "num_images", "strength", "init_image", "output_format", "quality", "memory_mode", "device", "loras", "inpaint_mode", "mask_image", "defaults_note")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FAMILY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    INIT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    INPAINT_MODE_FIELD_NUMBER: _ClassVar[int]
    MASK_IMAGE_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_NOTE_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_family: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: _diffusion_pb2.Scheduler
    seed: int
    num_images: int
    strength: float
    init_image: _artifact_pb2.ObjectRef
    output_format: _media_pb2.ImageFormat
    quality: int
    memory_mode: _diffusion_pb2.MemoryMode
    device: str
    loras: _containers.RepeatedCompositeFieldContainer[_diffusion_pb2.AppliedLora]
    inpaint_mode: InpaintMode
    mask_image: _artifact_pb2.ObjectRef
    defaults_note: str
    def __init__(self, model: _Optional[str] = ..., model_family: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., scheduler: _Optional[_Union[_diffusion_pb2.Scheduler, str]] = ..., seed: _Optional[int] = ..., num_images: _Optional[int] = ..., strength: _Optional[float] = ..., init_image: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., output_format: _Optional[_Union[_media_pb2.ImageFormat, str]] = ..., quality: _Optional[int] = ..., memory_mode: _Optional[_Union[_diffusion_pb2.MemoryMode, str]] = ..., device: _Optional[str] = ..., loras: _Optional[_Iterable[_Union[_diffusion_pb2.AppliedLora, _Mapping]]] = ..., inpaint_mode: _Optional[_Union[InpaintMode, str]] = ..., mask_image: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., defaults_note: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queued_seconds", "model_load_seconds", "denoise_seconds", "decode_seconds", "save_seconds", "total_seconds")
    QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DENOISE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DECODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    queued_seconds: float
    model_load_seconds: float
    denoise_seconds: float
    decode_seconds: float
    save_seconds: float
    total_seconds: float
    def __init__(self, queued_seconds: _Optional[float] = ..., model_load_seconds: _Optional[float] = ..., denoise_seconds: _Optional[float] = ..., decode_seconds: _Optional[float] = ..., save_seconds: _Optional[float] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("images", "parameters", "timings", "record")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[GeneratedImage]
    parameters: ImageParameters
    timings: Timings
    record: _artifact_pb2.Artifact
    def __init__(self, images: _Optional[_Iterable[_Union[GeneratedImage, _Mapping]]] = ..., parameters: _Optional[_Union[ImageParameters, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., record: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class GenerateImageResponse(_message.Message):
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
    result: ImageResult
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    progress: _job_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., progress_update: _Optional[_Union[ProgressUpdate, _Mapping]] = ..., result: _Optional[_Union[ImageResult, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ...) -> None: ...

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
    result: ImageResult
    def __init__(self, status: _Optional[_Union[_job_pb2.JobStatus, _Mapping]] = ..., result: _Optional[_Union[ImageResult, _Mapping]] = ...) -> None: ...

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
