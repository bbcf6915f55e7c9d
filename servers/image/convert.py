"""Protobuf <-> Image domain types, with the validation that names fields and ranges."""

from __future__ import annotations

from genmesh.common.v1 import media_pb2
from genmesh.image.v1 import image_pb2
from servers.diffusion.params import IMAGE, optional, refuse, require
from servers.image.engine import ImageOutcome
from servers.image.records import SavedImage
from servers.image.types import ImageFormat, ImageRequest, ObjectLocation
from servers.runtime import convert as common
from storage.object_store import StoredObject

FORMATS = {
    media_pb2.IMAGE_FORMAT_UNSPECIFIED: ImageFormat.PNG,
    media_pb2.IMAGE_FORMAT_PNG: ImageFormat.PNG,
    media_pb2.IMAGE_FORMAT_WEBP: ImageFormat.WEBP,
    media_pb2.IMAGE_FORMAT_JPEG: ImageFormat.JPEG,
}
INPAINT_MODES = {"": image_pb2.INPAINT_MODE_UNSPECIFIED, "inpainting_model": image_pb2.INPAINT_MODE_INPAINTING_MODEL,
                 "latent_blend": image_pb2.INPAINT_MODE_LATENT_BLEND}  # fmt: skip
FORMAT_ENUMS = {ImageFormat.PNG: media_pb2.IMAGE_FORMAT_PNG, ImageFormat.WEBP: media_pb2.IMAGE_FORMAT_WEBP,
                ImageFormat.JPEG: media_pb2.IMAGE_FORMAT_JPEG}  # fmt: skip


def generate_image_request(message: image_pb2.GenerateImageRequest) -> ImageRequest:
    """Presence and oneof rules here; every value's limits from ``servers.diffusion.params``. Unset
    steps, guidance, size and strength stay ``None``: the model's defaults are chosen at ``prepare``."""
    shared = common.diffusion_fields(message, IMAGE)
    require(message.output_format in FORMATS, "output_format", f"must be a known format (got {message.output_format})")
    quality = 90
    if FORMATS[message.output_format] is not ImageFormat.PNG:  # documented as ignored for PNG
        quality = optional(IMAGE, message, "quality") or quality

    source = message.WhichOneof("init_image")
    init_data, init_ref = common.media_input(message, source, "init_image")
    mask_source = message.WhichOneof("mask_image")
    if mask_source is not None:
        require(source is not None, mask_source, "needs an init image (init_image_data or init_image_ref) to inpaint")
    mask_data, mask_ref = common.media_input(message, mask_source, "mask_image")
    if message.HasField("strength") and source is None:
        raise refuse("strength", "is only allowed with an init image (img2img)")

    return ImageRequest(
        **shared,
        num_images=optional(IMAGE, message, "num_images") or 1,
        init_image_data=init_data,
        init_image_ref=init_ref,
        strength=optional(IMAGE, message, "strength"),
        output_format=FORMATS[message.output_format],
        quality=quality,
        mask_image_data=mask_data,
        mask_image_ref=mask_ref,
    )


def image_parameters(
    request: ImageRequest,
    outcome: ImageOutcome,
    init_image: ObjectLocation | None,
    mask_image: ObjectLocation | None = None,
) -> image_pb2.ImageParameters:
    """What made the images (as run, defaults filled): in the result and in the job's record."""
    params = outcome.result.params
    return image_pb2.ImageParameters(
        **common.run_parameters(params, outcome.loaded, request.defaults_note),
        model=outcome.model.name,
        model_family=outcome.family,
        num_images=params.num_images,
        init_image=common.object_ref(init_image),
        output_format=FORMAT_ENUMS[request.output_format],
        quality=0 if request.output_format is ImageFormat.PNG else request.quality,
        inpaint_mode=INPAINT_MODES[outcome.result.inpaint_mode],
        mask_image=common.object_ref(mask_image),
    )


def image_result(
    request: ImageRequest,
    saved: list[SavedImage],
    parameters: image_pb2.ImageParameters,
    record: StoredObject | None,
    timings: image_pb2.Timings,
) -> image_pb2.ImageResult:
    return image_pb2.ImageResult(
        images=[
            image_pb2.GeneratedImage(
                index=item.index,
                seed=item.seed,
                artifact=common.artifact(item.stored, item.data if request.return_inline else None),
            )
            for item in saved
        ],
        parameters=parameters,
        timings=timings,
        record=common.artifact(record),
    )
