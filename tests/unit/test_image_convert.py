"""GenerateImageRequest validation: every bad field is named with its allowed range."""

from __future__ import annotations

import pytest

from genmesh.common.v1 import diffusion_pb2, media_pb2
from genmesh.errors import InvalidArgument
from genmesh.image.v1 import image_pb2
from servers.image.convert import generate_image_request
from servers.image.types import ImageFormat
from servers.runtime.convert import SCHEDULERS


def request(**fields) -> image_pb2.GenerateImageRequest:
    return image_pb2.GenerateImageRequest(prompt=fields.pop("prompt", "a cat"), **fields)


def test_unset_fields_are_left_to_the_model() -> None:
    parsed = generate_image_request(request())
    assert (parsed.width, parsed.height, parsed.scheduler, parsed.seed) == (None, None, None, None)
    assert (parsed.steps, parsed.guidance_scale, parsed.num_images) == (None, None, 1)
    assert parsed.output_format is ImageFormat.PNG and not parsed.is_img2img and parsed.strength is None


def test_img2img_fields() -> None:
    parsed = generate_image_request(request(init_image_data=b"\x89PNG...", strength=0.4))
    assert parsed.is_img2img and parsed.strength == pytest.approx(0.4)
    by_ref = generate_image_request(
        request(init_image_ref={"bucket": "outputs", "key": "20261122_1200/img-1/image_0.png"})
    )
    assert by_ref.init_image_ref is not None and by_ref.strength is None  # the default is filled at prepare


def test_every_scheduler_enum_maps_to_a_name() -> None:
    values = [v.number for v in diffusion_pb2.Scheduler.DESCRIPTOR.values if v.number]
    assert sorted(values) == sorted(SCHEDULERS)
    parsed = generate_image_request(request(scheduler=diffusion_pb2.SCHEDULER_EULER_ANCESTRAL))
    assert parsed.scheduler == "euler_a"
    webp = generate_image_request(request(output_format=media_pb2.IMAGE_FORMAT_WEBP, quality=70))
    assert webp.output_format is ImageFormat.WEBP and webp.quality == 70


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 10_001}, "prompt"),
        ({"negative_prompt": "x" * 10_001}, "negative_prompt"),
        ({"width": 63}, "width"),
        ({"width": 100}, "width"),
        ({"height": 2056}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": 151}, "steps"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"num_images": 0}, "num_images"),
        ({"keep_alive_seconds": -2}, "keep_alive_seconds"),
        ({"keep_alive_seconds": 86_401}, "keep_alive_seconds"),
        ({"seed": 2**32}, "seed"),
        ({"scheduler": 99}, "scheduler"),
        ({"quality": 101, "output_format": media_pb2.IMAGE_FORMAT_JPEG}, "quality"),
        ({"init_image_ref": {"bucket": "A B", "key": "a.png"}}, "init_image_ref.bucket"),
        ({"preview_interval_steps": -1}, "preview_interval_steps"),
        ({"strength": 0.5}, "strength"),
        ({"init_image_data": b"x", "strength": 0.0}, "strength"),
        ({"init_image_data": b"x", "strength": 1.5}, "strength"),
        ({"init_image_ref": {"bucket": "outputs", "key": "../secrets"}}, "init_image_ref.key"),
        ({"init_image_ref": {"bucket": "", "key": "a.png"}}, "init_image_ref.bucket"),
    ],
)
def test_bad_fields_are_named(fields: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        generate_image_request(request(**fields))
    assert caught.value.field == field and field in caught.value.message
    if field in ("prompt", "width", "height", "steps", "guidance_scale", "num_images", "seed", "strength"):
        assert caught.value.message.startswith(f"{field} ")  # one style for every limit: "<field> must ..."


def test_quality_is_ignored_for_png() -> None:
    assert generate_image_request(request(quality=0)).quality == 90
