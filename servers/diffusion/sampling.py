"""What one run of either pipeline takes alike (txt2img/img2img in ``generate``, AnimateDiff in
``animate``): prompts, size, sampling, one init image, previews, LoRAs. Each adds its own fields and
its native step and guidance defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from servers.diffusion.lora import ResolvedLora


@dataclass(frozen=True)
class SamplingParams:
    """``None`` means the task's default (``resolve_params`` / ``resolve_video_params`` fill it)."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int = 0  # each task declares its native default
    guidance_scale: float = 0.0
    seed: int = 0
    scheduler: str | None = None
    strength: float | None = None
    init_image: Image.Image | None = None  # RGB, e.g. from servers.media.images.decode_image
    preview_every: int = 0  # a preview every N steps; 0 for none
    loras: tuple[ResolvedLora, ...] = ()
