"""Domain types of the Image service (plain Python; convert.py maps protobuf to and from them)."""

from __future__ import annotations

from dataclasses import dataclass

from servers.diffusion.lora import LoraRequest
from servers.media.images import ImageFormat
from storage.object_store import ObjectLocation

__all__ = ["ImageRequest", "ObjectLocation"]


@dataclass(frozen=True)
class ImageRequest:
    """A validated GenerateImage request; ``None`` means "use the model's or server's default"."""

    prompt: str
    model: str = ""
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    num_images: int = 1
    init_image_data: bytes | None = None
    init_image_ref: ObjectLocation | None = None
    strength: float | None = None
    output_format: ImageFormat = ImageFormat.PNG
    quality: int = 90
    return_inline: bool = False
    preview_interval_steps: int = 0
    keep_alive_seconds: int | None = None  # how long the model stays loaded after the job (None: server's)
    loras: tuple[LoraRequest, ...] = ()  # from `loras` and the prompt's <lora:...> (taken out of `prompt`)
    mask_image_data: bytes | None = None  # inpainting (with an init image)
    mask_image_ref: ObjectLocation | None = None
    defaults_note: str = ""  # set at admission when light defaults (smoke-test model, CPU) filled a field

    @property
    def mask_field(self) -> str:
        return "mask_image_data" if self.mask_image_data is not None else "mask_image_ref"

    @property
    def has_mask(self) -> bool:
        return self.mask_image_data is not None or self.mask_image_ref is not None

    @property
    def is_img2img(self) -> bool:
        return self.init_image_data is not None or self.init_image_ref is not None
