"""Domain types of the Video service (plain Python; convert.py maps protobuf to and from them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from servers.diffusion.lora import LoraRequest
from servers.media.video import VideoFormat
from storage.object_store import ObjectLocation


@dataclass(frozen=True)
class VideoRequest:
    """A validated GenerateVideo request; ``None`` means "use the default"."""

    prompt: str
    model: str = ""
    motion_adapter: str = ""
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int = 8
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    output_format: VideoFormat = VideoFormat.GIF
    return_inline: bool = False
    save_frames: bool = False
    preview_interval_steps: int = 0
    init_image_data: bytes | None = None
    init_image_ref: ObjectLocation | None = None
    init_video_data: bytes | None = None
    init_video_ref: ObjectLocation | None = None
    strength: float | None = None
    prompt_schedule: dict[int, str] = field(default_factory=dict)
    keep_alive_seconds: int | None = None  # how long the models stay loaded after the job (None: server's)
    defaults_note: str = ""  # set at admission when light defaults (smoke-test model, CPU) filled a field
    loras: tuple[LoraRequest, ...] = ()  # from `loras` and the prompt's <lora:...> (taken out of `prompt`)
