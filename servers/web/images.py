"""``/v1/images/generations`` and ``/v1/images/edits`` (multipart, img2img): OpenAI's image request ->
a genmesh GenerateImage request, and its result -> OpenAI's images response."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from genmesh.common.v1 import media_pb2
from genmesh.image.v1 import image_pb2
from servers.diffusion.params import IMAGE, Limit
from servers.web.errors import invalid
from servers.web.fields import Body, Form, Param, assign, assign_size_and_extras

OUTPUT_FORMATS = {
    "png": media_pb2.IMAGE_FORMAT_PNG,
    "webp": media_pb2.IMAGE_FORMAT_WEBP,
    "jpeg": media_pb2.IMAGE_FORMAT_JPEG,
}
FORMAT_NAMES = {value: name for name, value in OUTPUT_FORMATS.items()}
RESPONSE_FORMATS = ("url", "b64_json")
MAX_PARTIAL_IMAGES = 3  # OpenAI's limit
_SIZE = {"type": "string", "pattern": "^[0-9]+x[0-9]+$"}
ANSWER = {
    "type": "object",
    "required": ["created", "data"],
    "properties": {
        "created": {"type": "integer"},
        "data": {"type": "array", "items": {"type": "object", "properties": {
            "url": {"type": "string"}, "b64_json": {"type": "string"}, "seed": {"type": "integer"}},
            "anyOf": [{"required": ["url"]}, {"required": ["b64_json"]}]}},
        "output_format": {"enum": list(OUTPUT_FORMATS)},
        "size": _SIZE,
    },
}  # fmt: skip
EVENT = {
    "type": "object",
    "required": ["type", "b64_json"],
    "properties": {
        "type": {"enum": ["image_generation.partial_image", "image_generation.completed"]},
        "b64_json": {"type": "string"}, "size": _SIZE, "partial_image_index": {"type": "integer"},
    },
}  # fmt: skip
SIZE = "WIDTHxHEIGHT in pixels (each {}) or auto: the model's default size."
# genmesh's own fields that tools such as Open WebUI merge into the request, by their genmesh names.
EXTRAS = (
    Param("seed", "integer", "genmesh's own: the seed (image i of a batch gets seed + i).", IMAGE["seed"]),
    Param("negative_prompt", "string", "genmesh's own: what not to draw.", IMAGE["negative_prompt"]),
    Param("steps", "integer", "genmesh's own: denoising steps.", IMAGE["steps"]),
    Param("guidance_scale", "number", "genmesh's own: classifier-free guidance.", IMAGE["guidance_scale"]),
)
_COMMON = (
    Param("prompt", "string", "What to draw.", IMAGE["prompt"], required=True),
    Param("model", "string", "An image model's name or alias (GET /v1/models); the service's default when absent."),
    Param("n", "integer", "Images to make.", IMAGE["num_images"]),
    Param("size", "string", SIZE.format(IMAGE["width"].describe()), schema={"pattern": "^(auto|[0-9]+x[0-9]+)$"}),
    Param("response_format", "string", "Presigned URLs, or the bytes as base64.", choices=RESPONSE_FORMATS),
    Param("output_format", "string", "The images' file format.", choices=tuple(OUTPUT_FORMATS)),
    Param("output_compression", "integer", "Quality of webp and jpeg images.", IMAGE["quality"]),
    *EXTRAS,
)
GENERATION_FIELDS = (
    *_COMMON,
    Param("stream", "boolean", "Answer as server-sent events: partial images, then one "
          "`image_generation.completed` event per image."),
    Param("partial_images", "integer", "Previews to stream while drawing.", Limit(0, MAX_PARTIAL_IMAGES)),
)  # fmt: skip
EDIT_FIELDS = (
    *_COMMON,
    Param("image", "string", "The one image to start from (img2img).", file=True, required=True),
    Param("image[]", "string", "The same, as OpenAI's clients name a list of one image.", file=True),
    Param("mask", "string", "Inpainting masks are refused (not supported yet).", file=True),
    Param("strength", "number", "How far from the image to go.", IMAGE["strength"]),
)  # fmt: skip
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
    assign_size_and_extras(request, fields, EXTRAS, IMAGE)
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
