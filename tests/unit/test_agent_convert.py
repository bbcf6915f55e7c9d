"""CreateCharacter validation: every bad field is named, stages run in order without gaps, and a caller
may start from its own sheet or portrait."""

from __future__ import annotations

import pytest

from genmesh import errors
from genmesh.agent.v1 import agent_pb2
from genmesh.common.v1 import diffusion_pb2
from genmesh.common.v1.diffusion_pb2 import LoraWeight
from genmesh.video.v1 import video_pb2
from servers.agent.convert import create_character_request
from servers.agent.types import SHEET_LIMITS, SHEET_SCHEMA, STAGES

SHEET = agent_pb2.CharacterSheet(
    name="Mira", biography="A lighthouse keeper.", personality="calm", appearance_prompt="a woman, portrait",
    negative_prompt="blurry", motion_prompt="she blinks",
)  # fmt: skip


def convert(**fields):
    return create_character_request(agent_pb2.CreateCharacterRequest(**fields))


def field_of(**fields) -> str | None:
    with pytest.raises(errors.InvalidArgument) as caught:
        convert(**fields)
    return caught.value.field


def test_defaults_run_every_stage_with_the_services_defaults() -> None:
    request = convert(idea="a lighthouse keeper")
    assert request.stages == STAGES == ("text", "image", "video")
    assert request.seed is None and request.steps is None and request.text.max_tokens == 768
    assert request.video.output_format == "gif" and request.image.scheduler is None and not request.detach


def test_options_are_converted() -> None:
    request = convert(
        idea="x", seed=7, steps=4, style="oil painting", detach=True,
        text=agent_pb2.TextStageOptions(max_tokens=256, temperature=0.0, seed=3),
        image=agent_pb2.ImageStageOptions(width=64, height=96, scheduler=diffusion_pb2.SCHEDULER_EULER_ANCESTRAL),
        video=agent_pb2.VideoStageOptions(num_frames=8, fps=4, output_format=video_pb2.VIDEO_FORMAT_MP4, steps=2),
    )  # fmt: skip
    assert (request.seed, request.steps, request.style, request.detach) == (7, 4, "oil painting", True)
    assert (request.text.max_tokens, request.text.temperature, request.text.seed) == (256, 0.0, 3)
    assert (request.image.width, request.image.height, request.image.scheduler) == (64, 96, "euler_a")
    assert (request.video.num_frames, request.video.output_format, request.video.steps) == (8, "mp4", 2)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"idea": ""}, "idea"),
        ({"idea": "   "}, "idea"),
        ({"idea": "x" * 2001}, "idea"),
        ({"idea": "x", "style": "s" * 201}, "style"),
        ({"idea": "x", "steps": 0}, "steps"),
        ({"idea": "x", "steps": 151}, "steps"),
        ({"idea": "x", "seed": -1}, "seed"),
        ({"idea": "x", "seed": 2**32}, "seed"),
        ({"idea": "x", "text": agent_pb2.TextStageOptions(max_tokens=10)}, "text.max_tokens"),
        ({"idea": "x", "text": agent_pb2.TextStageOptions(temperature=3.0)}, "text.temperature"),
        ({"idea": "x", "image": agent_pb2.ImageStageOptions(width=65)}, "image.width"),
        ({"idea": "x", "image": agent_pb2.ImageStageOptions(height=32)}, "image.height"),
        ({"idea": "x", "image": agent_pb2.ImageStageOptions(steps=0)}, "image.steps"),
        ({"idea": "x", "image": agent_pb2.ImageStageOptions(guidance_scale=31)}, "image.guidance_scale"),
        ({"idea": "x", "image": agent_pb2.ImageStageOptions(scheduler=999)}, "image.scheduler"),
        ({"idea": "x", "video": agent_pb2.VideoStageOptions(num_frames=1)}, "video.num_frames"),
        ({"idea": "x", "video": agent_pb2.VideoStageOptions(fps=61)}, "video.fps"),
        ({"idea": "x", "video": agent_pb2.VideoStageOptions(strength=0.0)}, "video.strength"),
        ({"idea": "x", "video": agent_pb2.VideoStageOptions(output_format=42)}, "video.output_format"),
        ({"idea": "x", "video": agent_pb2.VideoStageOptions(seed=-5)}, "video.seed"),
        (
            {"idea": "x", "image": agent_pb2.ImageStageOptions(loras=[LoraWeight(name="a", weight=2.5)])},
            "image.loras[0].weight",
        ),
        (
            {"idea": "x", "video": agent_pb2.VideoStageOptions(loras=[LoraWeight(name="a"), LoraWeight(name="a")])},
            "video.loras[1].name",
        ),
        (
            {"idea": "x", "video": agent_pb2.VideoStageOptions(loras=[LoraWeight(name=str(i)) for i in range(6)])},
            "video.loras",
        ),
    ],
)
def test_bad_fields_are_named(fields: dict, field: str) -> None:
    assert field_of(**fields) == field


def test_stage_loras_are_kept_with_their_weights() -> None:
    image = agent_pb2.ImageStageOptions(loras=[LoraWeight(name="ink", weight=0.6), LoraWeight(name="film")])
    request = convert(idea="x", image=image)
    assert [(lora.name, lora.weight) for lora in request.image.loras] == [("ink", pytest.approx(0.6)), ("film", 1.0)]


@pytest.mark.parametrize(
    "stages",
    [
        [agent_pb2.STAGE_TEXT, agent_pb2.STAGE_VIDEO],  # a gap
        [agent_pb2.STAGE_IMAGE, agent_pb2.STAGE_TEXT],  # out of order
        [agent_pb2.STAGE_TEXT, agent_pb2.STAGE_TEXT],  # a repeat
        [agent_pb2.STAGE_UNSPECIFIED],
        [7],
    ],
)
def test_stages_must_be_in_order_without_gaps(stages: list[int]) -> None:
    assert field_of(idea="x", stages=stages, sheet=SHEET) == "stages"


def test_a_caller_may_stop_after_any_stage() -> None:
    assert convert(idea="x", stages=[agent_pb2.STAGE_TEXT]).stages == ("text",)
    assert convert(idea="x", stages=[agent_pb2.STAGE_TEXT, agent_pb2.STAGE_IMAGE]).stages == ("text", "image")


def test_starting_from_a_sheet_or_a_portrait() -> None:
    request = convert(stages=[agent_pb2.STAGE_IMAGE, agent_pb2.STAGE_VIDEO], sheet=SHEET)
    assert request.sheet is not None and request.sheet.name == "Mira" and request.idea == ""
    assert field_of(stages=[agent_pb2.STAGE_IMAGE]) == "sheet"
    assert field_of(stages=[agent_pb2.STAGE_IMAGE], sheet=agent_pb2.CharacterSheet(name="x")) == "sheet.biography"
    assert field_of(idea="x", sheet=SHEET) == "sheet"  # the text stage writes its own
    too_long = agent_pb2.CharacterSheet(name="n" * 61)
    assert field_of(stages=[agent_pb2.STAGE_VIDEO], idea="x", sheet=too_long, portrait_ref={"bucket": "outputs",
                    "key": "a/b.png"}) == "sheet.name"  # fmt: skip

    ref = {"bucket": "outputs", "key": "20261129_2330/img-1/image_0.png"}
    video_only = convert(idea="she waves", stages=[agent_pb2.STAGE_VIDEO], portrait_ref=ref)
    assert video_only.portrait_ref is not None and video_only.portrait_ref.key == ref["key"]
    assert field_of(idea="x", stages=[agent_pb2.STAGE_VIDEO]) == "portrait_ref"
    assert field_of(stages=[agent_pb2.STAGE_VIDEO], portrait_ref=ref) == "idea"  # no motion prompt at all
    assert convert(stages=[agent_pb2.STAGE_VIDEO], portrait_ref=ref, sheet=SHEET).sheet.motion_prompt == "she blinks"
    assert field_of(idea="x", portrait_ref=ref) == "portrait_ref"
    assert field_of(idea="x", stages=[agent_pb2.STAGE_VIDEO], portrait_ref={"bucket": "B!", "key": "k"}) == (
        "portrait_ref.bucket"
    )


def test_the_sheet_schema_matches_the_sheet_message() -> None:
    message_fields = [field.name for field in agent_pb2.CharacterSheet.DESCRIPTOR.fields]
    assert list(SHEET_LIMITS) == message_fields == SHEET_SCHEMA["required"]
    assert SHEET_SCHEMA["additionalProperties"] is False


class _ListingUpstreams:
    """What check_model_names asks of the upstreams: each service's ListModels names, by kind."""

    def __init__(self, listed: dict) -> None:
        self.listed = listed
        self.asked: list[str] = []

    def model_names(self, name: str, metadata) -> dict | None:
        self.asked.append(name)
        return self.listed.get(name)


def test_unknown_model_names_are_refused_at_submit_naming_the_field_and_known_names() -> None:
    from servers.agent.job import check_model_names

    upstreams = _ListingUpstreams({
        "text": {"base": ["gemma"]}, "image": {"base": ["tiny-sd15"], "lora": ["ink"]},
        "video": {"base": ["tiny-sd15"], "motion_adapter": ["tiny-motion-adapter"]},
    })  # fmt: skip
    check_model_names(convert(idea="x"), upstreams, ())
    assert upstreams.asked == []  # no names given: nothing to ask
    video = agent_pb2.VideoStageOptions(model="tiny-sd15", motion_adapter="tiny-motion-adapter")
    check_model_names(convert(idea="x", text=agent_pb2.TextStageOptions(model="gemma"), video=video), upstreams, ())
    for fields, field, message in (
        ({"text": agent_pb2.TextStageOptions(model="no")}, "text.model", "unknown model 'no'; available: gemma"),
        (
            {"image": agent_pb2.ImageStageOptions(model="ink")},
            "image.model",
            "unknown model 'ink'; available: tiny-sd15",
        ),  # a LoRA is no model
        (
            {"video": agent_pb2.VideoStageOptions(motion_adapter="no")},
            "video.motion_adapter",
            "unknown motion adapter 'no'; available: tiny-motion-adapter",
        ),
    ):
        with pytest.raises(errors.NotFound) as caught:
            check_model_names(convert(idea="x", **fields), upstreams, ())
        assert caught.value.field == field and caught.value.message == f"{field}: {message}"
    silent = _ListingUpstreams({})  # a service that does not answer now: its stage asks again when it starts
    check_model_names(convert(idea="x", text=agent_pb2.TextStageOptions(model="any")), silent, ())
    assert silent.asked == ["text"]
