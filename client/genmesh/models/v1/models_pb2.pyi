import datetime

from genmesh.common.v1 import job_pb2 as _job_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_TEXT: _ClassVar[ModelKind]
    MODEL_KIND_IMAGE: _ClassVar[ModelKind]
    MODEL_KIND_MOTION: _ClassVar[ModelKind]

class PullPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PULL_PHASE_UNSPECIFIED: _ClassVar[PullPhase]
    PULL_PHASE_RESOLVE: _ClassVar[PullPhase]
    PULL_PHASE_DOWNLOAD: _ClassVar[PullPhase]
    PULL_PHASE_VERIFY: _ClassVar[PullPhase]
    PULL_PHASE_INSTALL: _ClassVar[PullPhase]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_TEXT: ModelKind
MODEL_KIND_IMAGE: ModelKind
MODEL_KIND_MOTION: ModelKind
PULL_PHASE_UNSPECIFIED: PullPhase
PULL_PHASE_RESOLVE: PullPhase
PULL_PHASE_DOWNLOAD: PullPhase
PULL_PHASE_VERIFY: PullPhase
PULL_PHASE_INSTALL: PullPhase

class PullModelRequest(_message.Message):
    __slots__ = ("ref", "no_verify", "allow_pickle", "name", "detach")
    REF_FIELD_NUMBER: _ClassVar[int]
    NO_VERIFY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PICKLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    ref: str
    no_verify: bool
    allow_pickle: bool
    name: str
    detach: bool
    def __init__(self, ref: _Optional[str] = ..., no_verify: _Optional[bool] = ..., allow_pickle: _Optional[bool] = ..., name: _Optional[str] = ..., detach: _Optional[bool] = ...) -> None: ...

class PullProgress(_message.Message):
    __slots__ = ("phase", "file_name", "bytes_done", "bytes_total", "bytes_per_second", "eta_seconds", "retries")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    phase: PullPhase
    file_name: str
    bytes_done: int
    bytes_total: int
    bytes_per_second: float
    eta_seconds: float
    retries: int
    def __init__(self, phase: _Optional[_Union[PullPhase, str]] = ..., file_name: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., bytes_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., retries: _Optional[int] = ...) -> None: ...

class PullResult(_message.Message):
    __slots__ = ("name", "kind", "path", "sha256", "size_bytes", "verified", "digest_source", "url", "already_present", "resumed_bytes", "family")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    DIGEST_SOURCE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    RESUMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    path: str
    sha256: str
    size_bytes: int
    verified: bool
    digest_source: str
    url: str
    already_present: bool
    resumed_bytes: int
    family: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., verified: _Optional[bool] = ..., digest_source: _Optional[str] = ..., url: _Optional[str] = ..., already_present: _Optional[bool] = ..., resumed_bytes: _Optional[int] = ..., family: _Optional[str] = ...) -> None: ...

class PullModelResponse(_message.Message):
    __slots__ = ("job_id", "state", "queued", "started", "pull_progress", "result", "error", "cancelled", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PULL_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: _job_pb2.JobState
    queued: _job_pb2.Queued
    started: _job_pb2.Started
    pull_progress: PullProgress
    result: PullResult
    error: _job_pb2.JobError
    cancelled: _job_pb2.Cancelled
    progress: _job_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., queued: _Optional[_Union[_job_pb2.Queued, _Mapping]] = ..., started: _Optional[_Union[_job_pb2.Started, _Mapping]] = ..., pull_progress: _Optional[_Union[PullProgress, _Mapping]] = ..., result: _Optional[_Union[PullResult, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., cancelled: _Optional[_Union[_job_pb2.Cancelled, _Mapping]] = ..., progress: _Optional[_Union[_job_pb2.Progress, _Mapping]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ModelKind
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ("path", "kind", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: ModelKind
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class PruneModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PruneModelsResponse(_message.Message):
    __slots__ = ("removed_files", "freed_bytes")
    REMOVED_FILES_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    removed_files: int
    freed_bytes: int
    def __init__(self, removed_files: _Optional[int] = ..., freed_bytes: _Optional[int] = ...) -> None: ...

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
    result: PullResult
    def __init__(self, status: _Optional[_Union[_job_pb2.JobStatus, _Mapping]] = ..., result: _Optional[_Union[PullResult, _Mapping]] = ...) -> None: ...

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
