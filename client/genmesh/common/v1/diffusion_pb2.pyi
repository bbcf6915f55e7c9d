from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Scheduler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULER_UNSPECIFIED: _ClassVar[Scheduler]
    SCHEDULER_EULER: _ClassVar[Scheduler]
    SCHEDULER_EULER_ANCESTRAL: _ClassVar[Scheduler]
    SCHEDULER_DPMPP_2M: _ClassVar[Scheduler]
    SCHEDULER_DPMPP_2M_KARRAS: _ClassVar[Scheduler]
    SCHEDULER_DPMPP_2M_SDE: _ClassVar[Scheduler]
    SCHEDULER_DPMPP_2M_SDE_KARRAS: _ClassVar[Scheduler]
    SCHEDULER_DPMPP_SDE: _ClassVar[Scheduler]
    SCHEDULER_DPMPP_SDE_KARRAS: _ClassVar[Scheduler]
    SCHEDULER_DDIM: _ClassVar[Scheduler]
    SCHEDULER_UNIPC: _ClassVar[Scheduler]
    SCHEDULER_LMS: _ClassVar[Scheduler]
    SCHEDULER_LMS_KARRAS: _ClassVar[Scheduler]
    SCHEDULER_PNDM: _ClassVar[Scheduler]
    SCHEDULER_HEUN: _ClassVar[Scheduler]
    SCHEDULER_DEIS: _ClassVar[Scheduler]

class MemoryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_MODE_UNSPECIFIED: _ClassVar[MemoryMode]
    MEMORY_MODE_FULL: _ClassVar[MemoryMode]
    MEMORY_MODE_LOW_VRAM: _ClassVar[MemoryMode]
SCHEDULER_UNSPECIFIED: Scheduler
SCHEDULER_EULER: Scheduler
SCHEDULER_EULER_ANCESTRAL: Scheduler
SCHEDULER_DPMPP_2M: Scheduler
SCHEDULER_DPMPP_2M_KARRAS: Scheduler
SCHEDULER_DPMPP_2M_SDE: Scheduler
SCHEDULER_DPMPP_2M_SDE_KARRAS: Scheduler
SCHEDULER_DPMPP_SDE: Scheduler
SCHEDULER_DPMPP_SDE_KARRAS: Scheduler
SCHEDULER_DDIM: Scheduler
SCHEDULER_UNIPC: Scheduler
SCHEDULER_LMS: Scheduler
SCHEDULER_LMS_KARRAS: Scheduler
SCHEDULER_PNDM: Scheduler
SCHEDULER_HEUN: Scheduler
SCHEDULER_DEIS: Scheduler
MEMORY_MODE_UNSPECIFIED: MemoryMode
MEMORY_MODE_FULL: MemoryMode
MEMORY_MODE_LOW_VRAM: MemoryMode

class LoraWeight(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class AppliedLora(_message.Message):
    __slots__ = ("name", "weight", "sha256", "from_prompt")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FROM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    sha256: str
    from_prompt: bool
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., sha256: _Optional[str] = ..., from_prompt: _Optional[bool] = ...) -> None: ...
