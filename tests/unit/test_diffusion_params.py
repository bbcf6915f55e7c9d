"""Each diffusion request's limits in one place (servers.diffusion.params): one message style, the
converters of Image, Video and the agent refusing the same values with the same words, the rules
that need defaults, and the light defaults for the smoke-test models and CPUs."""

from __future__ import annotations

import pytest

from genmesh.agent.v1 import agent_pb2
from genmesh.client.requests import SCHEDULERS as CLIENT_SCHEDULERS
from genmesh.errors import InvalidArgument
from genmesh.image.v1 import image_pb2
from genmesh.video.v1 import video_pb2
from servers.agent.convert import create_character_request
from servers.diffusion import params as spec
from servers.diffusion.schedulers import SCHEDULER_NAMES
from servers.image.convert import generate_image_request
from servers.image.job import with_defaults
from servers.video.convert import generate_video_request


def refused(call, *args) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call(*args)
    return caught.value


def test_one_message_style_for_every_limit() -> None:
    assert refused(spec.STEPS.check, 0, "steps").message == "steps must be between 1 and 150 (got 0)"
    assert refused(spec.IMAGE["width"].check, 100, "width").message == "width must be a multiple of 8 (got 100)"
    assert refused(spec.STRENGTH.check, 0.0, "strength").message == (
        "strength must be greater than 0 and at most 1 (got 0)"
    )
    assert refused(spec.PROMPT.check, "  ", "prompt").message == "prompt must not be empty"
    too_long = refused(spec.PROMPT.check, "x" * 10_001, "prompt").message
    assert too_long == "prompt must be at most 10000 characters (got 10001)"
    assert spec.IMAGE["width"].describe() == "64..2048, a multiple of 8"


@pytest.mark.parametrize(
    ("name", "value"),
    [("width", 100), ("height", 32), ("steps", 0), ("guidance_scale", 31.0), ("seed", 2**32)],
)
def test_image_video_and_agent_refuse_alike(name: str, value) -> None:
    """The same bad value gets the same words from Image, Video and the agent's stages (under its prefix)."""
    image = refused(generate_image_request, image_pb2.GenerateImageRequest(prompt="a", **{name: value}))
    options = {name: value}
    agent = refused(create_character_request, agent_pb2.CreateCharacterRequest(idea="a", image=options))
    assert image.field == name and image.message.startswith(f"{name} must ")
    assert agent.field == f"image.{name}" and agent.message == f"image.{image.message}"
    if name in ("steps", "seed"):
        video = refused(generate_video_request, video_pb2.GenerateVideoRequest(prompt="a", **{name: value}))
        assert video.message == image.message
        agent_video = refused(create_character_request, agent_pb2.CreateCharacterRequest(idea="a", video=options))
        assert agent_video.message == f"video.{image.message}"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"width": 100}, "width"),
        ({"height": 1032}, "height"),  # video's sides stop at 1024
        ({"num_frames": 1}, "num_frames"),
        ({"num_frames": 65}, "num_frames"),
        ({"fps": 61}, "fps"),
        ({"steps": 0}, "steps"),
        ({"strength": 0.5}, "strength"),  # no init media
        ({"scheduler": 99}, "scheduler"),
        ({"prompt_schedule": {2: "  "}}, "prompt_schedule[2]"),
        ({"prompt_schedule": {i: "x" for i in range(17)}}, "prompt_schedule"),
    ],
)
def test_video_fields_are_checked_at_conversion(fields: dict, field: str) -> None:
    error = refused(generate_video_request, video_pb2.GenerateVideoRequest(prompt="a", **fields))
    assert error.field == field and error.message.startswith(f"{field} ")


def test_rules_that_need_defaults() -> None:
    spec.check_steps_strength(2, 0.5)
    spec.check_steps_strength(1, None)
    error = refused(spec.check_steps_strength, 1, 0.5)
    assert error.field == "strength" and "(got 0.5 x 1)" in error.message
    spec.check_video_frames(8, {7: "late"}, None)
    assert refused(spec.check_video_frames, 8, {8: "late"}, None).message == (
        "prompt_schedule must name frames within 0..7 (got frame 8)"
    )
    assert refused(spec.check_video_frames, 8, {}, 4).message == (
        "num_frames must be at most the init video's 4 frames (got 8)"
    )


def test_light_defaults_for_the_smoke_test_model_and_cpus() -> None:
    assert spec.image_defaults(smoke_test=False, cpu=False) == spec.IMAGE_NATIVE  # a real model on a GPU
    assert spec.video_defaults(smoke_test=False, cpu=False) == spec.VIDEO_NATIVE
    for defaults, native in ((spec.image_defaults, spec.IMAGE_NATIVE), (spec.video_defaults, spec.VIDEO_NATIVE)):
        for smoke_test, cpu in ((True, False), (True, True), (False, True)):
            light = defaults(smoke_test=smoke_test, cpu=cpu)
            assert light.steps < native.steps and light.side and light.note.startswith("light defaults for")
            assert ("smoke-test" in light.note) == smoke_test
    video = spec.video_defaults(smoke_test=True, cpu=True)
    assert video.num_frames < spec.VIDEO_NATIVE.num_frames and f"{video.num_frames} frames" in video.note


def test_image_admission_fills_defaults_and_says_so() -> None:
    light = spec.image_defaults(smoke_test=True, cpu=True)
    filled = with_defaults(generate_image_request(image_pb2.GenerateImageRequest(prompt="a")), light)
    assert (filled.width, filled.height, filled.steps, filled.guidance_scale) == (light.side, light.side,
                                                                                   light.steps, 7.5)  # fmt: skip
    assert filled.defaults_note == light.note
    explicit = image_pb2.GenerateImageRequest(prompt="a", width=64, height=64, steps=3)
    assert with_defaults(generate_image_request(explicit), light).defaults_note == ""  # nothing was defaulted
    sized = image_pb2.GenerateImageRequest(prompt="a", width=64, height=64)
    assert with_defaults(generate_image_request(sized), light).defaults_note.endswith(
        ": 8 steps (set them to override)"
    )
    native = with_defaults(generate_image_request(image_pb2.GenerateImageRequest(prompt="a")), spec.IMAGE_NATIVE)
    assert (native.width, native.steps, native.defaults_note) == (None, 25, "")  # the family's native size
    img2img = image_pb2.GenerateImageRequest(prompt="a", init_image_data=b"x", steps=1)
    assert refused(with_defaults, generate_image_request(img2img), spec.IMAGE_NATIVE).field == "strength"  # 1 x 0.75
    inpaint = generate_image_request(image_pb2.GenerateImageRequest(prompt="a", init_image_data=b"x",
                                                                    mask_image_data=b"m", steps=1))  # fmt: skip
    assert with_defaults(inpaint, spec.IMAGE_NATIVE).strength == 1.0


def test_one_scheduler_table() -> None:
    """The client's names are read from the proto enum; the servers' classes cover exactly those names."""
    assert set(CLIENT_SCHEDULERS) == set(SCHEDULER_NAMES)
    assert CLIENT_SCHEDULERS["euler_a"] == "SCHEDULER_EULER_ANCESTRAL"


def test_light_defaults_fit_an_input_within_their_size() -> None:
    assert spec.fit_within(1024, 512, 256) == (256, 128)
    assert spec.fit_within(100, 72, 256) == (96, 72)  # smaller inputs keep their size, snapped to 8
    assert spec.fit_within(4000, 100, 128) == (128, 64)  # never below 64
    light = spec.image_defaults(smoke_test=True, cpu=False)
    img2img = generate_image_request(image_pb2.GenerateImageRequest(prompt="a", init_image_data=b"x"))
    fitted = with_defaults(img2img, light, (1024, 768))
    assert (fitted.width, fitted.height) == (256, 192)
    assert fitted.defaults_note == "light defaults for the smoke-test model: 256x192, 8 steps (set them to override)"
    stepped = with_defaults(img2img, light, (64, 64))
    assert stepped.width == 64 and stepped.defaults_note.endswith(": 64x64, 8 steps (set them to override)")
    assert with_defaults(img2img, spec.IMAGE_NATIVE, (1024, 768)).width is None  # native: the init image's size


def test_video_admission_fills_light_defaults_and_checks_what_needs_them(tmp_path) -> None:
    """The Video engine's admission step on a CPU with the smoke-test models (nothing is loaded)."""
    from PIL import Image

    from servers.diffusion.catalog import MOTION_ADAPTERS, ModelCatalog
    from servers.video.engine import VideoEngine
    from servers.video.types import VideoRequest

    engine = VideoEngine(
        ModelCatalog(tmp_path / "models"), ModelCatalog(tmp_path / "motion", kind=MOTION_ADAPTERS),
        cache_dir=tmp_path, device="cpu",
    )  # fmt: skip
    params, note = engine.params_for(VideoRequest("a"), None, None)
    assert (params.width, params.height, params.num_frames, params.steps) == (128, 128, 8, 4)
    assert note == "light defaults for the smoke-test model: 128x128, 8 frames, 4 steps (set them to override)"
    still = Image.new("RGB", (512, 256))
    params, note = engine.params_for(VideoRequest("a", num_frames=16, steps=2), still, None)
    assert (params.width, params.height, params.num_frames, params.strength) == (128, 64, 16, 0.8)
    assert note.endswith(": 128x64 (set them to override)")
    _, note = engine.params_for(VideoRequest("a", width=64, height=64, num_frames=8, steps=2), None, None)
    assert note == ""
    assert refused(engine.params_for, VideoRequest("a", steps=1, strength=0.5), still, None).field == "strength"
    late = VideoRequest("a", num_frames=8, prompt_schedule={8: "late"})
    assert refused(engine.params_for, late, None, None).field == "prompt_schedule"
    assert refused(engine.params_for, VideoRequest("a", num_frames=8), None, [still] * 4).field == "num_frames"


def test_compile_warm_up_defaults_to_the_size_requests_get() -> None:
    """A compiled server warms up at its default size: the light one for the smoke-test model or a CPU."""
    from types import SimpleNamespace

    from servers.diffusion.compiled import default_image_shapes, default_video_shapes

    model = SimpleNamespace(family="sd15")
    assert (default_image_shapes(model)[0].width, default_image_shapes(model, 256)[0].width) == (512, 256)
    light = spec.video_defaults(smoke_test=True, cpu=True)
    first = default_video_shapes(light.side, light.num_frames)[0]
    assert (first.width, first.count) == (128, 8) and default_video_shapes()[0].count == 16
