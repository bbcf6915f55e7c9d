"""Domain types of the Agent service (plain Python; convert.py maps protobuf to and from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from servers.runtime.events import Payload
from storage.object_store import ObjectLocation, StoredObject

# The stages, in the only order they may run; each is one job on the service of the same name.
STAGES: tuple[str, ...] = ("text", "image", "video")

# The character sheet: what the text stage must write (the Text service enforces it with a grammar).
# Length limits keep a sheet short enough to finish within the default max_tokens.
SHEET_LIMITS: dict[str, tuple[int, int]] = {
    "name": (1, 60),
    "biography": (1, 600),
    "personality": (1, 300),
    "appearance_prompt": (1, 400),
    "negative_prompt": (0, 200),
    "motion_prompt": (1, 200),
}
SHEET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        name: {"type": "string", "minLength": low, "maxLength": high} for name, (low, high) in SHEET_LIMITS.items()
    },
    "required": list(SHEET_LIMITS),
    "additionalProperties": False,
}


@dataclass(frozen=True)
class CharacterSheet:
    name: str
    biography: str
    personality: str
    appearance_prompt: str
    negative_prompt: str
    motion_prompt: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class TextOptions:
    model: str = ""
    max_tokens: int = 768
    temperature: float | None = None
    seed: int | None = None  # None: the request's seed


@dataclass(frozen=True)
class ImageOptions:
    model: str = ""
    width: int | None = None
    height: int | None = None
    guidance_scale: float | None = None
    scheduler: str | None = None  # a name of genmesh.client.requests.SCHEDULERS
    seed: int | None = None
    steps: int | None = None


@dataclass(frozen=True)
class VideoOptions:
    model: str = ""
    motion_adapter: str = ""
    num_frames: int | None = None
    fps: int | None = None
    output_format: str = "gif"  # a name of genmesh.client.requests.VIDEO_FORMATS
    strength: float | None = None
    seed: int | None = None
    steps: int | None = None


@dataclass(frozen=True)
class CharacterRequest:
    """A validated CreateCharacter request; ``None`` means "use the default"."""

    idea: str
    style: str = ""
    seed: int | None = None
    steps: int | None = None
    text: TextOptions = field(default_factory=TextOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    stages: tuple[str, ...] = STAGES
    sheet: CharacterSheet | None = None
    portrait_ref: ObjectLocation | None = None
    detach: bool = False


# Typed payloads the job streams (``jobs.Output``); convert.py turns them into events.
@dataclass(frozen=True)
class StageStarted(Payload):
    stage: str
    sub_job_id: str
    service: str


@dataclass(frozen=True)
class StageProgress(Payload):
    stage: str
    sub_job_id: str
    sub_progress: Any  # the sub-job's genmesh.common.v1.Progress, passed through
    sub_stage: str = ""


@dataclass(frozen=True)
class StageDone(Payload):
    stage: str
    sub_job_id: str
    stored: StoredObject
    seconds: float
    sheet: CharacterSheet | None = None
