"""The overall progress of a character job: stages weighted by expected cost, learned from past runs."""

from __future__ import annotations

import json

import pytest

from genmesh import errors
from servers.agent.eta import (
    DEFAULT_RATES,
    DEFAULT_TEXT_FILL,
    OVERHEAD_SECONDS,
    RATES_KEY,
    UNIT_SECONDS,
    CostModel,
    ProgressPlan,
    work_units,
)
from servers.agent.types import CharacterRequest, ImageOptions, TextOptions, VideoOptions
from storage.buckets import OUTPUTS


def test_work_units_follow_the_request() -> None:
    small = CharacterRequest("x", steps=4, image=ImageOptions(width=64, height=64), video=VideoOptions(num_frames=8))
    big = CharacterRequest("x", steps=40, image=ImageOptions(width=512, height=512), video=VideoOptions(num_frames=32))
    assert work_units(small, "text") == 768 == work_units(big, "text")
    assert work_units(big, "image") == pytest.approx(40) and work_units(small, "image") == pytest.approx(4 / 64)
    assert work_units(big, "video") == pytest.approx(40 * 0.8 * 32)
    # Stage options override the request's steps.
    override = CharacterRequest("x", steps=40, image=ImageOptions(steps=10), text=TextOptions(max_tokens=100))
    assert work_units(override, "image") == pytest.approx(10) and work_units(override, "text") == 100


def test_weights_follow_expected_cost_and_the_plan_counts_earlier_stages_whole() -> None:
    request = CharacterRequest("x", steps=25)
    plan = CostModel().plan(request)
    units = {
        "text": 768 * DEFAULT_TEXT_FILL,
        "image": work_units(request, "image"),
        "video": work_units(request, "video"),
    }
    expected = {
        stage: round((OVERHEAD_SECONDS[stage] + DEFAULT_RATES[stage] * units[stage]) / UNIT_SECONDS)
        for stage in ("text", "image", "video")
    }
    assert plan.weights == expected and list(plan.weights) == ["text", "image", "video"]
    assert plan.weights["video"] > plan.weights["image"] > plan.weights["text"]  # video costs most by default
    text, image, video = expected.values()
    assert plan.step("text", 0.0) == 0 and plan.step("text", 1.0) == text
    assert plan.step("image", 0.5) == text + round(image / 2)
    assert plan.step("video", 1.0) == plan.total == text + image + video
    assert plan.step("video", 7.0) == plan.total and plan.step("image", -1) == text  # clamped


def test_a_plan_covers_only_the_stages_that_run() -> None:
    plan = CostModel().plan(CharacterRequest("x", stages=("image", "video")))
    assert list(plan.weights) == ["image", "video"] and plan.step("image", 0) == 0
    with pytest.raises(KeyError):
        plan.step("text", 0.5)
    assert ProgressPlan({"text": 1}).total == 1


def test_costs_are_learned_from_finished_stages() -> None:
    model = CostModel()
    request = CharacterRequest("x", steps=25)
    units = work_units(request, "video")
    before = model.expected_seconds("video", units)
    # The first real run replaces the guess: the same job is then expected to take what it took.
    model.observe("video", units, 4.0)
    assert model.expected_seconds("video", units) == pytest.approx(4.0)
    assert model.overhead("video") / model.rate("video") == pytest.approx(
        OVERHEAD_SECONDS["video"] / DEFAULT_RATES["video"]
    )
    # Later runs move it halfway; a bigger job is expected to take longer by its rate.
    model.observe("video", units, 8.0)
    assert model.expected_seconds("video", units) == pytest.approx(6.0)
    assert model.expected_seconds("video", 2 * units) > model.expected_seconds("video", units)
    model.observe("video", 0, 10)  # nothing to learn from
    model.observe("text", 10, -1)
    assert model.rate("text") == DEFAULT_RATES["text"]
    # A shorter video stage now weighs less against the image stage than with the defaults.
    assert model.expected_seconds("video", units) < before
    assert model.plan(request).weights["video"] < CostModel().plan(request).weights["video"]


def test_the_text_stage_is_measured_against_what_a_sheet_takes() -> None:
    """A sheet ends when its JSON closes, far below max_tokens: the stage's progress and weight
    follow the share of max_tokens sheets took, learned from each finished one."""
    model = CostModel()
    request = CharacterRequest("x", text=TextOptions(max_tokens=1000))
    assert model.units(request, "text") == pytest.approx(1000 * DEFAULT_TEXT_FILL)
    assert model.text_fraction(request, 200) == pytest.approx(200 / (1000 * DEFAULT_TEXT_FILL))
    assert model.text_fraction(request, 990) == 0.95  # its end is not known before it comes
    model.observe_text(1000, 200, 4.0)  # a sheet of 200 tokens in 4 s
    assert model.units(request, "text") == pytest.approx(200)
    assert model.expected_seconds("text", model.units(request, "text")) == pytest.approx(4.0)
    model.observe_text(1000, 100, 4.0)  # later sheets move the share halfway
    assert model.units(request, "text") == pytest.approx(150)


class _Store:
    """Just the two object-store calls the cost model makes, in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.failing = False

    def get_bytes(self, bucket: str, key: str) -> bytes:
        if (bucket, key) not in self.objects:
            raise errors.NotFound(f"no object {key!r}")
        return self.objects[bucket, key]

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        if self.failing:
            raise errors.Unavailable("the object store is down")
        self.objects[bucket, key] = data


def test_learned_rates_survive_a_restart_through_the_store() -> None:
    store = _Store()
    first = CostModel(store=store)  # type: ignore[arg-type]
    first.load()  # nothing stored yet: the defaults
    assert first.rate("image") == DEFAULT_RATES["image"]
    first.observe("image", 10, OVERHEAD_SECONDS["image"] + 1.0)
    stored = json.loads(store.objects[OUTPUTS, RATES_KEY])
    assert stored["rates_seconds_per_unit"]["image"] == first.rate("image")
    assert stored["overhead_seconds"]["image"] == first.overhead("image") and stored["observed"] == ["image"]
    second = CostModel(store=store)  # type: ignore[arg-type]
    second.load()
    assert second.rate("image") == first.rate("image") != DEFAULT_RATES["image"]
    assert second.overhead("image") == first.overhead("image")
    second.observe("image", 10, 1.0)  # the store said image was learned: this run moves it halfway
    assert second.expected_seconds("image", 10) == pytest.approx((first.expected_seconds("image", 10) + 1.0) / 2)
    first.observe_text(1000, 100, OVERHEAD_SECONDS["text"] + 1.0)
    third = CostModel(store=store)  # type: ignore[arg-type]
    third.load()
    request = CharacterRequest("x", text=TextOptions(max_tokens=1000))
    assert third.units(request, "text") == first.units(request, "text") < 1000 * DEFAULT_TEXT_FILL
    assert second.rate("video") == DEFAULT_RATES["video"]
    # A store that fails costs only the memory; the job's observation still counts.
    store.failing = True
    second.observe("video", 10, OVERHEAD_SECONDS["video"] + 1.0)
    assert second.rate("video") != DEFAULT_RATES["video"]


@pytest.mark.parametrize(
    "stored",
    [b"not json", b"[1, 2]", b'{"rates_seconds_per_unit": {"image": -1, "video": "fast", "text": NaN, "x": 1}}'],
)
def test_unreadable_or_invalid_stored_rates_leave_the_defaults(stored: bytes) -> None:
    store = _Store()
    store.objects[OUTPUTS, RATES_KEY] = stored
    model = CostModel(store=store)  # type: ignore[arg-type]
    model.load()
    assert all(model.rate(stage) == rate for stage, rate in DEFAULT_RATES.items())
