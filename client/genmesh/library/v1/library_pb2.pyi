import datetime

from genmesh.common.v1 import artifact_pb2 as _artifact_pb2
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

class OutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_KIND_UNSPECIFIED: _ClassVar[OutputKind]
    OUTPUT_KIND_TEXT: _ClassVar[OutputKind]
    OUTPUT_KIND_IMAGE: _ClassVar[OutputKind]
    OUTPUT_KIND_VIDEO: _ClassVar[OutputKind]
    OUTPUT_KIND_CHARACTER: _ClassVar[OutputKind]
    OUTPUT_KIND_RESTORED_IMAGE: _ClassVar[OutputKind]
OUTPUT_KIND_UNSPECIFIED: OutputKind
OUTPUT_KIND_TEXT: OutputKind
OUTPUT_KIND_IMAGE: OutputKind
OUTPUT_KIND_VIDEO: OutputKind
OUTPUT_KIND_CHARACTER: OutputKind
OUTPUT_KIND_RESTORED_IMAGE: OutputKind

class ListOutputsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "kind", "created_after", "created_before", "all_clients", "include_sub_jobs")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ALL_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SUB_JOBS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    kind: OutputKind
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    all_clients: bool
    include_sub_jobs: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kind: _Optional[_Union[OutputKind, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., all_clients: _Optional[bool] = ..., include_sub_jobs: _Optional[bool] = ...) -> None: ...

class Output(_message.Message):
    __slots__ = ("job_id", "kind", "service", "method", "create_time", "client_id", "folder", "artifacts", "thumbnail", "parameters", "parent_job_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    THUMBNAIL_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: OutputKind
    service: str
    method: str
    create_time: _timestamp_pb2.Timestamp
    client_id: str
    folder: str
    artifacts: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Artifact]
    thumbnail: _artifact_pb2.Artifact
    parameters: _struct_pb2.Struct
    parent_job_id: str
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[_Union[OutputKind, str]] = ..., service: _Optional[str] = ..., method: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_id: _Optional[str] = ..., folder: _Optional[str] = ..., artifacts: _Optional[_Iterable[_Union[_artifact_pb2.Artifact, _Mapping]]] = ..., thumbnail: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., parent_job_id: _Optional[str] = ...) -> None: ...

class ListOutputsResponse(_message.Message):
    __slots__ = ("outputs", "next_page_token")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[Output]
    next_page_token: str
    def __init__(self, outputs: _Optional[_Iterable[_Union[Output, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteOutputRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteOutputResponse(_message.Message):
    __slots__ = ("job_id", "deleted_objects")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DELETED_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    deleted_objects: int
    def __init__(self, job_id: _Optional[str] = ..., deleted_objects: _Optional[int] = ...) -> None: ...
