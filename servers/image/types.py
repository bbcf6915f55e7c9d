"""Domain types of the Image service (plain Python; convert.py maps protobuf to and from them)."""

from __future__ import annotations

from dataclasses import dataclass

from servers.diffusion.request import DiffusionRequest
from servers.media.images import ImageFormat
from storage.object_store import ObjectLocation

__all__ = ["ImageRequest", "ObjectLocation"]


@dataclass(frozen=True)
class ImageRequest(DiffusionRequest):
    """A validated GenerateImage request: a batch of images, maybe inpainted."""

    num_images: int = 1
    output_format: ImageFormat = ImageFormat.PNG
    quality: int = 90
    mask_image_data: bytes | None = None  # inpainting (with an init image)
    mask_image_ref: ObjectLocation | None = None

    @property
    def mask_field(self) -> str:
        return "mask_image_data" if self.mask_image_data is not None else "mask_image_ref"

    @property
    def has_mask(self) -> bool:
        return self.mask_image_data is not None or self.mask_image_ref is not None

    @property
    def is_img2img(self) -> bool:
        return self.init_image_data is not None or self.init_image_ref is not None
