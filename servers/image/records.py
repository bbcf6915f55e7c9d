"""Stores a job's images in the ``outputs`` bucket under YYYYMMDD_HHmm/<job_id>/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from servers.diffusion.generate import GenerationParams
from servers.diffusion.schedulers import scheduler_label
from servers.image.engine import ImageOutcome
from servers.image.types import ImageRequest
from servers.media.images import CONTENT_TYPES, EXTENSIONS, a1111_parameters, encode_image
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore, StoredObject


@dataclass(frozen=True)
class SavedImage:
    index: int
    seed: int
    stored: StoredObject
    data: bytes


def save_images(store: ObjectStore, prefix: str, request: ImageRequest, outcome: ImageOutcome) -> list[SavedImage]:
    """Encode each image (PNG carries its generation parameters, as popular UIs write them) and upload it."""
    params = outcome.result.params
    saved = []
    for index, (image, seed) in enumerate(zip(outcome.result.images, outcome.result.seeds, strict=True)):
        text = a1111_parameters(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            steps=params.steps,
            sampler=scheduler_label(params.scheduler or ""),
            cfg_scale=params.guidance_scale,
            seed=seed,
            width=params.width or image.width,
            height=params.height or image.height,
            model=outcome.model.name,
            extra=_extra(params, outcome.result.inpaint_mode),
        )
        data = encode_image(image, request.output_format, quality=request.quality, parameters=text)
        key = f"{prefix}image_{index}.{EXTENSIONS[request.output_format]}"
        stored = store.put_bytes(OUTPUTS, key, data, CONTENT_TYPES[request.output_format])
        saved.append(SavedImage(index, seed, stored, data))
    return saved


def save_init_image(store: ObjectStore, prefix: str, image: Image.Image) -> StoredObject:
    """Keep an inline init image next to the results (as PNG), so a record can always be re-run."""
    return store.put_bytes(OUTPUTS, f"{prefix}init.png", encode_image(image, "png"), "image/png")


def save_mask_image(store: ObjectStore, prefix: str, mask: Image.Image) -> StoredObject:
    """Keep an inline inpainting mask next to the results (as PNG), like the init image."""
    return store.put_bytes(OUTPUTS, f"{prefix}mask.png", encode_image(mask.convert("RGB"), "png"), "image/png")


def _extra(params: GenerationParams, inpaint_mode: str) -> dict[str, Any]:
    """A1111's extra fields: denoising strength, and its "Lora hashes" (name: first 12 hex of the
    file's SHA-256) so the image names the exact LoRA files; plus how an inpainting job ran."""
    extra: dict[str, Any] = {}
    if params.strength is not None:
        extra["Denoising strength"] = params.strength
    if params.loras:
        extra["Lora hashes"] = ", ".join(f"{lora.file.name}: {lora.file.sha256[:12]}" for lora in params.loras)
        extra["Lora weights"] = ", ".join(f"{lora.file.name}: {lora.weight:g}" for lora in params.loras)
    if inpaint_mode:
        extra["Inpaint"] = inpaint_mode
    return extra
