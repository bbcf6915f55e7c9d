import datetime

from genmesh.common.v1 import artifact_pb2 as _artifact_pb2
from genmesh.common.v1 import diffusion_pb2 as _diffusion_pb2
from genmesh.common.v1 import job_pb2 as _job_pb2
from genmesh.video.v1 import video_pb2 as _video_pb2
from google.api import annotations_pb2 as _annotations_pb2
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
    STAGE_TEXT: _ClassVar[Stage]
    STAGE_IMAGE: _ClassVar[Stage]
    STAGE_VIDEO: _ClassVar[Stage]
STAGE_UNSPECIFIED: Stage
STAGE_TEXT: Stage
STAGE_IMAGE: Stage
STAGE_VIDEO: Stage

class TextStageOptions(_message.Message):
    __slots__ = ("model", "max_tokens", "temperature", "seed")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    model: str
    max_tokens: int
    temperature: float
    seed: int
    def __init__(self, model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class ImageStageOptions(_message.Message):
    __slots__ = ("model", "width", "height", "guidance_scale", "scheduler", "seed", "steps", "loras")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    model: str
    width: int
    height: int
    guidance_scale: float
    scheduler: _diffusion_pb2.Scheduler
    seed: int
    steps: int
    loras: _containers.RepeatedCompositeFieldContainer[_diffusion_pb2.LoraWeight]
    def __init__(self, model: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., scheduler: _Optional[_Union[_diffusion_pb2.Scheduler, str]] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., loras: _Optional[_Iterable[_Union[_diffusion_pb2.LoraWeight, _Mapping]]] = ...) -> None: ...

class VideoStageOptions(_message.Message):
    __slots__ = ("model", "motion_adapter", "num_frames", "fps", "output_format", "strength", "seed", "steps", "loras")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MOTION_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    model: str
    motion_adapter: str
    num_frames: int
    fps: int
    output_format: _video_pb2.VideoFormat
    strength: float
    seed: int
    steps: int
    loras: _containers.RepeatedCompositeFieldContainer[_diffusion_pb2.LoraWeight]
    def __init__(self, model: _Optional[str] = ..., motion_adapter: _Optional[str] = ..., num_frames: _Optional[int] = ..., fps: _Optional[int] = ..., output_format: _Optional[_Union[_video_pb2.VideoFormat, str]] = ..., strength: _Optional[float] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., loras: _Optional[_Iterable[_Union[_diffusion_pb2.LoraWeight, _Mapping]]] = ...) -> None: ...

class CharacterSheet(_message.Message):
    __slots__ = ("name", "biography", "personality", "appearance_prompt", "negative_prompt", "motion_prompt")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BIOGRAPHY_FIELD_NUMBER: _ClassVar[int]
    PERSONALITY_FIELD_NUMBER: _ClassVar[int]
    APPEARANCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    MOTION_PROMPT_FIELD_NUMBER: _ClassVar[int]
    name: str
    biography: str
    personality: str
    appearance_prompt: str
    negative_prompt: str
    motion_prompt: str
    def __init__(self, name: _Optional[str] = ..., biography: _Optional[str] = ..., personality: _Optional[str] = ..., appearance_prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., motion_prompt: _Optional[str] = ...) -> None: ...

class CreateCharacterRequest(_message.Message):
    __slots__ = ("idea", "style", "seed", "steps", "text", "image", "video", "stages", "sheet", "portrait_ref", "detach", "notify_url")
    IDEA_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    SHEET_FIELD_NUMBER: _ClassVar[int]
    PORTRAIT_REF_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    NOTIFY_URL_FIELD_NUMBER: _ClassVar[int]
    idea: str
    style: str
    seed: int
    steps: int
    text: TextStageOptions
    image: ImageStageOptions
    video: VideoStageOptions
    stages: _containers.RepeatedScalarFieldContainer[Stage]
    sheet: CharacterSheet
    portrait_ref: _artifact_pb2.ObjectRef
    detach: bool
    notify_url: str
    def __init__(self, idea: _Optional[str] = ..., style: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., text: _Optional[_Union[TextStageOptions, _Mapping]] = ..., image: _Optional[_Union[ImageStageOptions, _Mapping]] = ..., video: _Optional[_Union[VideoStageOptions, _Mapping]] = ..., stages: _Optional[_Iterable[_Union[Stage, str]]] = ..., sheet: _Optional[_Union[CharacterSheet, _Mapping]] = ..., portrait_ref: _Optional[_Union[_artifact_pb2.ObjectRef, _Mapping]] = ..., detach: _Optional[bool] = ..., notify_url: _Optional[str] = ...) -> None: ...

class StageStarted(_message.Message):
    __slots__ = ("stage", "sub_job_id", "service")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SUB_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    sub_job_id: str
    service: str
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., sub_job_id: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class StageProgress(_message.Message):
    __slots__ = ("stage", "sub_job_id", "sub_progress", "sub_stage")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SUB_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SUB_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUB_STAGE_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    sub_job_id: str
    sub_progress: _job_pb2.Progress
    sub_stage: str
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., sub_job_id: _Optional[str] = ..., sub_progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ..., sub_stage: _Optional[str] = ...) -> None: ...

class StageResult(_message.Message):
    __slots__ = ("stage", "sub_job_id", "sheet", "artifact", "seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SUB_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SHEET_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    sub_job_id: str
    sheet: CharacterSheet
    artifact: _artifact_pb2.Artifact
    seconds: float
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., sub_job_id: _Optional[str] = ..., sheet: _Optional[_Union[CharacterSheet, _Mapping]] = ..., artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., seconds: _Optional[float] = ...) -> None: ...

class CharacterParameters(_message.Message):
    __slots__ = ("seed", "steps", "stages", "style", "idea")
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    IDEA_FIELD_NUMBER: _ClassVar[int]
    seed: int
    steps: int
    stages: _containers.RepeatedScalarFieldContainer[Stage]
    style: str
    idea: str
    def __init__(self, seed: _Optional[int] = ..., steps: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[Stage, str]]] = ..., style: _Optional[str] = ..., idea: _Optional[str] = ...) -> None: ...

class CharacterResult(_message.Message):
    __slots__ = ("sheet", "sheet_artifact", "portrait", "video", "stages", "parameters", "record", "total_seconds")
    SHEET_FIELD_NUMBER: _ClassVar[int]
    SHEET_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    PORTRAIT_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    sheet: CharacterSheet
    sheet_artifact: _artifact_pb2.Artifact
    portrait: _artifact_pb2.Artifact
    video: _artifact_pb2.Artifact
    stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    parameters: CharacterParameters
    record: _artifact_pb2.Artifact
    total_seconds: float
    def __init__(self, sheet: _Optional[_Union[CharacterSheet, _Mapping]] = ..., sheet_artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., portrait: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., video: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ..., parameters: _Optional[_Union[CharacterParameters, _Mapping]] = ..., record: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., total_seconds: _Optional[float] = ...) -> None: ...

class CharacterError(_message.Message):
    __slots__ = ("code", "message", "stage", "sub_job_id", "completed_stages")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SUB_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_STAGES_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    stage: Stage
    sub_job_id: str
    completed_stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., stage: _Optional[_Union[Stage, str]] = ..., sub_job_id: _Optional[str] = ..., completed_stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ...) -> None: ...

class CharacterCancelled(_message.Message):
    __slots__ = ("reason", "stage", "completed_stages")
    REASON_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_STAGES_FIELD_NUMBER: _ClassVar[int]
    reason: str
    stage: Stage
    completed_stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    def __init__(self, reason: _Optional[str] = ..., stage: _Optional[_Union[Stage, str]] = ..., completed_stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ...) -> None: ...

class CreateCharacterResponse(_message.Message):
    __slots__ = ("job_id", "state", "queued", "started", "stage_started", "stage_progress", "stage_result", "result", "error", "cancelled", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    STAGE_STARTED_FIELD_NUMBER: _ClassVar[int]
    STAGE_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STAGE_RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _job_pb2.JobState
    queued: _job_pb2.Queued
    started: _job_pb2.Started
    stage_started: StageStarted
    stage_progress: StageProgress
    stage_result: StageResult
    result: CharacterResult
    error: CharacterError
    cancelled: CharacterCancelled
    progress: _job_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., stage_started: _Optional[_Union[StageStarted, _Mapping]] = ..., stage_progress: _Optional[_Union[StageProgress, _Mapping]] = ..., stage_result: _Optional[_Union[StageResult, _Mapping]] = ..., result: _Optional[_Union[CharacterResult, _Mapping]] = ..., error: _Optional[_Union[CharacterError, _Mapping]] = ..., cancelled: _Optional[_Union[CharacterCancelled, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("status", "result", "completed_stages")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_STAGES_FIELD_NUMBER: _ClassVar[int]
    status: _job_pb2.JobStatus
    result: CharacterResult
    completed_stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    def __init__(self, status: _Optional[_Union[_job_pb2.JobStatus, _Mapping]] = ..., result: _Optional[_Union[CharacterResult, _Mapping]] = ..., completed_stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ...) -> None: ...

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
