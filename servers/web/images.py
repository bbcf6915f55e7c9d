"""``/v1/images/generations`` and ``/v1/images/edits`` (multipart, img2img): OpenAI's image request ->
a genmesh GenerateImage request, and its result -> OpenAI's images response."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from genmesh.common.v1 import media_pb2
from genmesh.image.v1 import image_pb2
from servers.diffusion.params import IMAGE
from servers.web.errors import invalid
from servers.web.fields import Body, Form, assign, parse_size

OUTPUT_FORMATS = {
    "png": media_pb2.IMAGE_FORMAT_PNG,
    "webp": media_pb2.IMAGE_FORMAT_WEBP,
    "jpeg": media_pb2.IMAGE_FORMAT_JPEG,
}
FORMAT_NAMES = {value: name for name, value in OUTPUT_FORMATS.items()}
RESPONSE_FORMATS = ("url", "b64_json")
MAX_PARTIAL_IMAGES = 3  # OpenAI's limit
# genmesh's own fields that tools such as Open WebUI merge into the request, by their genmesh names.
EXTRAS = (("seed", "integer"), ("negative_prompt", "string"), ("steps", "integer"), ("guidance_scale", "number"))
GENERATION_FIELDS = ("prompt", "model", "n", "size", "response_format", "output_format", "output_compression",
                     "stream", "partial_images", *(name for name, _ in EXTRAS))  # fmt: skip
EDIT_FIELDS = (*GENERATION_FIELDS, "image", "image[]", "mask", "strength")
# genmesh field -> OpenAI parameter, for the service's messages
PARAMS = {"num_images": "n", "width": "size", "height": "size", "quality": "output_compression",
          "init_image_data": "image", "output_format": "output_format"}  # fmt: skip


@dataclass
class ImageCall:
    request: image_pb2.GenerateImageRequest
    b64: bool  # answer with the bytes (b64_json) instead of presigned URLs
    params: dict[str, str] = field(default_factory=lambda: dict(PARAMS))
    created: int = field(default_factory=lambda: int(time.time()))
    stream: bool = False  # OpenAI's image_generation.* events instead of one answer
    partial_images: int = 0  # previews to send while streaming, spread over the steps
    _sent_partials: int = 0

    def partial(self, event: image_pb2.GenerateImageResponse) -> dict | None:
        """An ``image_generation.partial_image`` event for this progress event, when a preview is due:
        the k-th of ``partial_images`` once k/(partial_images+1) of the steps are done. genmesh's
        previews are small WebPs decoded from the latents, so the event says ``webp``."""
        progress = event.progress
        if not (progress.HasField("preview") and self._sent_partials < self.partial_images and progress.total_steps):
            return None
        if progress.step * (self.partial_images + 1) < (self._sent_partials + 1) * progress.total_steps:
            return None
        self._sent_partials += 1
        preview = progress.preview
        return {
            "type": "image_generation.partial_image",
            "b64_json": base64.b64encode(preview.data).decode(),
            "created_at": self.created,
            "size": f"{preview.width}x{preview.height}",
            "quality": "auto",
            "background": "opaque",
            "output_format": preview.content_type.removeprefix("image/"),
            "partial_image_index": self._sent_partials - 1,
        }

    def completed(self, result: image_pb2.ImageResult) -> list[dict]:
        """One ``image_generation.completed`` event per image, with its bytes."""
        parameters = result.parameters
        return [
            {
                "type": "image_generation.completed",
                "b64_json": base64.b64encode(image.artifact.data).decode(),
                "created_at": self.created,
                "size": f"{parameters.width}x{parameters.height}",
                "quality": "auto",
                "background": "opaque",
                "output_format": FORMAT_NAMES.get(parameters.output_format, "png"),
                "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                "seed": image.seed,  # genmesh's own
            }
            for image in result.images
        ]

    def response(self, result: image_pb2.ImageResult) -> dict:
        data = []
        for image in result.images:
            artifact = image.artifact
            item: dict[str, Any] = (
                {"b64_json": base64.b64encode(artifact.data).decode()} if self.b64 else {"url": artifact.url}
            )
            item["revised_prompt"] = None
            item["seed"] = image.seed  # genmesh's own: image i of a batch is seed + i
            data.append(item)
        parameters = result.parameters
        return {
            "created": self.created,
            "data": data,
            "output_format": FORMAT_NAMES.get(parameters.output_format, "png"),
            "size": f"{parameters.width}x{parameters.height}",
        }


def _common(fields: Body | Form) -> ImageCall:
    request = image_pb2.GenerateImageRequest(prompt=fields.get("prompt", "string", ""))
    request.model = fields.get("model", "string", "")
    n = fields.get("n", "integer")
    if n is not None:
        assign(request, "num_images", n, "n", IMAGE)
    width, height = parse_size(fields.get("size", "string"))
    if width is not None:
        assign(request, "width", width, "size", IMAGE)
        assign(request, "height", height, "size", IMAGE)
    for name, kind in EXTRAS:
        value = fields.get(name, kind)
        if value is not None:
            assign(request, name, value, name, IMAGE)
    response_format = fields.get("response_format", "string", "url")
    if response_format not in RESPONSE_FORMATS:
        raise invalid("response_format", f"response_format: url or b64_json (got {response_format!r})")
    output_format = fields.get("output_format", "string")
    if output_format is not None:
        if output_format not in OUTPUT_FORMATS:
            raise invalid("output_format", f"output_format: png, webp or jpeg (got {output_format!r})")
        request.output_format = OUTPUT_FORMATS[output_format]
    compression = fields.get("output_compression", "integer")
    if compression is not None:
        assign(request, "quality", compression, "output_compression", IMAGE)
    request.return_inline = response_format == "b64_json"
    return ImageCall(request, response_format == "b64_json")


def generation_call(body: Body) -> ImageCall:
    call = _common(body)
    call.stream = body.get("stream", "boolean", False)
    partial_images = body.get("partial_images", "integer", 0)
    if not 0 <= partial_images <= MAX_PARTIAL_IMAGES:
        raise invalid(
            "partial_images", f"partial_images must be between 0 and {MAX_PARTIAL_IMAGES} (got {partial_images})"
        )
    if call.stream:
        call.partial_images = partial_images
        call.request.return_inline = True  # the completed event carries the image
        if partial_images:
            call.request.preview_interval_steps = 1  # which previews to pass on is chosen as they come
    return call


def edit_call(form: Form, image: bytes | None, images: int, has_mask: bool) -> ImageCall:
    """img2img: ``image`` is the one uploaded image's bytes."""
    if has_mask:
        raise invalid("mask", "mask: inpainting is not supported yet; send the image without a mask")
    if images != 1 or image is None:
        raise invalid("image", f"image: send exactly one image file (got {images})")
    call = _common(form)
    call.request.init_image_data = image
    strength = form.get("strength", "number")
    if strength is not None:
        assign(call.request, "strength", strength, "strength", IMAGE)
    return call
