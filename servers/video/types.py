"""Domain types of the Video service (plain Python; convert.py maps protobuf to and from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from servers.diffusion.request import DiffusionRequest
from servers.media.video import VideoFormat
from storage.object_store import ObjectLocation


@dataclass(frozen=True)
class VideoRequest(DiffusionRequest):
    """A validated GenerateVideo request: one clip from a base model and a motion adapter, started from
    nothing, an init image or an init video, its prompt maybe changing by frame."""

    motion_adapter: str = ""
    num_frames: int | None = None
    fps: int = 8
    output_format: VideoFormat = VideoFormat.GIF
    save_frames: bool = False
    init_video_data: bytes | None = None
    init_video_ref: ObjectLocation | None = None
    prompt_schedule: dict[int, str] = field(default_factory=dict)
