"""Synthetic training pairs: determinism, sizes, every preset and content kind, PSNR bands,
validation naming the field, pair names, batch ids and the manifest."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image

from genmesh.errors import Cancelled, InvalidArgument
from servers.training.data.synthetic import (
    CONTENT_KINDS,
    PRESETS,
    Pair,
    SyntheticSpec,
    degrade,
    encode_png,
    generate_pair,
    generate_pairs,
    get_preset,
    make_batch_id,
    manifest,
    preset_names,
    render_content,
)

BATCH = "20261122-140512-3f9c"

# Per preset, the band the median PSNR (dB) of six 128 x 128 pairs (two of each kind) must fall in.
MEDIAN_PSNR_BANDS = {
    "document-clean": (18, 36),
    "gaussian-noise": (18, 34),
    "blur": (15, 32),
    "jpeg": (18, 36),
    "mixed": (15, 32),
    "document-heavy": (13, 25),
    "downsample": (15, 32),
}
PAIR_PSNR_BAND = (10, 55)  # any single pair (smooth textures barely change under blur)


def psnr(clean: Image.Image, degraded: Image.Image) -> float:
    a = np.asarray(clean, dtype=np.float64)
    b = np.asarray(degraded, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def spec(**fields) -> SyntheticSpec:
    fields.setdefault("seed", 1234)
    fields.setdefault("width", 96)
    fields.setdefault("height", 80)
    fields.setdefault("num_images", 6)
    return SyntheticSpec(**fields).resolve()


def same_pair(a: Pair, b: Pair) -> bool:
    return (
        a.name == b.name
        and a.kind == b.kind
        and a.clean.tobytes() == b.clean.tobytes()
        and a.degraded.tobytes() == b.degraded.tobytes()
        and a.params == b.params
        and a.content == b.content
    )


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes() -> None:
    s = spec(degradation_type="mixed", content_kinds=CONTENT_KINDS)
    first, second = list(generate_pairs(s, BATCH)), list(generate_pairs(s, BATCH))
    assert len(first) == 6
    assert all(same_pair(a, b) for a, b in zip(first, second, strict=True))
    assert [encode_png(p.degraded) for p in first] == [encode_png(p.degraded) for p in second]
    other = list(generate_pairs(spec(degradation_type="mixed", content_kinds=CONTENT_KINDS, seed=1235), BATCH))
    assert all(a.clean.tobytes() != b.clean.tobytes() for a, b in zip(first, other, strict=True))


def test_any_pair_regenerates_alone() -> None:
    s = spec(degradation_type="document-heavy", content_kinds=("documents", "shapes"))
    pairs = list(generate_pairs(s, BATCH))
    for index in (0, 3, 5):
        assert same_pair(generate_pair(s, BATCH, index), pairs[index])
    # The images do not depend on how many pairs the batch has.
    assert same_pair(
        generate_pair(
            spec(degradation_type="document-heavy", num_images=4, content_kinds=("documents", "shapes")), BATCH, 3
        ),
        pairs[3],
    )
    with pytest.raises(ValueError):
        generate_pair(s, BATCH, 6)


def test_clean_images_depend_on_the_seed_not_the_preset() -> None:
    noisy = list(generate_pairs(spec(degradation_type="gaussian-noise", content_kinds=CONTENT_KINDS), BATCH))
    blurred = list(generate_pairs(spec(degradation_type="blur", content_kinds=CONTENT_KINDS), BATCH))
    assert [p.clean.tobytes() for p in noisy] == [p.clean.tobytes() for p in blurred]
    assert all(a.degraded.tobytes() != b.degraded.tobytes() for a, b in zip(noisy, blurred, strict=True))


# --- sizes, kinds, presets -----------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(64, 64), (200, 72), (72, 130)])
def test_sizes_and_modes(width: int, height: int) -> None:
    s = spec(width=width, height=height, degradation_type="document-clean", content_kinds=CONTENT_KINDS, num_images=3)
    for pair in generate_pairs(s, BATCH):
        assert pair.clean.size == pair.degraded.size == (width, height)
        assert pair.clean.mode == pair.degraded.mode == "RGB"


@pytest.mark.parametrize("kind", CONTENT_KINDS)
def test_every_content_kind_renders_something(kind: str) -> None:
    for seed in range(4):
        image, info = render_content(kind, 128, 96, np.random.default_rng(seed))
        assert image.size == (128, 96) and image.mode == "RGB" and info["kind"] == kind
        pixels = np.asarray(image)
        assert pixels.std() > 2, "a blank image"
        json.dumps(info)
    with pytest.raises(InvalidArgument) as err:
        render_content("people", 64, 64, np.random.default_rng(0))
    assert err.value.field == "content_kinds"


def test_documents_have_paper_and_ink() -> None:
    image, info = render_content("documents", 256, 256, np.random.default_rng(5))
    grey = np.asarray(image.convert("L"))
    assert np.median(grey) > 200, "paper-coloured background"
    assert (grey < 100).mean() > 0.01, "dark text"
    assert info["blocks"], info


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_degrades_every_kind_within_a_plausible_psnr(preset: str) -> None:
    s = spec(degradation_type=preset, content_kinds=CONTENT_KINDS, width=128, height=128, seed=2)
    values = []
    for pair in generate_pairs(s, BATCH):
        assert pair.degraded.size == pair.clean.size
        assert pair.degraded.tobytes() != pair.clean.tobytes()
        value = psnr(pair.clean, pair.degraded)
        assert PAIR_PSNR_BAND[0] < value < PAIR_PSNR_BAND[1], (pair.kind, pair.params, value)
        values.append(value)
        assert pair.params["preset"] == preset and pair.params["steps"], pair.params
        assert json.loads(json.dumps(pair.params)) == pair.params
    low, high = MEDIAN_PSNR_BANDS[preset]
    assert low <= float(np.median(values)) <= high, values


def test_heavy_document_scans_are_worse_than_clean_ones() -> None:
    clean = list(generate_pairs(spec(degradation_type="document-clean", num_images=5, width=160, height=160), BATCH))
    heavy = list(generate_pairs(spec(degradation_type="document-heavy", num_images=5, width=160, height=160), BATCH))
    assert {p.kind for p in clean + heavy} == {"documents"}
    assert np.mean([psnr(p.clean, p.degraded) for p in heavy]) < np.mean([psnr(p.clean, p.degraded) for p in clean])


def test_params_describe_what_was_drawn() -> None:
    grey = Image.new("RGB", (128, 128), (128, 128, 128))
    degraded, params = degrade("gaussian-noise", grey, np.random.default_rng(3))
    [step] = params["steps"]
    residual = np.asarray(degraded, dtype=np.float64) - 128
    assert residual.std() == pytest.approx(step["sigma"], rel=0.1)
    _, params = degrade("jpeg", grey, np.random.default_rng(3))
    assert 10 <= params["steps"][0]["quality"] <= 60
    _, params = degrade("mixed", grey, np.random.default_rng(4))
    assert params["components"] and set(params["components"]) <= {"blur", "downsample", "gaussian-noise", "jpeg"}


def test_unknown_preset_names_the_field_and_lists_the_presets() -> None:
    assert preset_names()[:5] == ("document-clean", "gaussian-noise", "blur", "jpeg", "mixed")
    assert set(preset_names()) == set(PRESETS)
    with pytest.raises(InvalidArgument) as err:
        get_preset("sharpen")
    assert err.value.field == "degradation_type"
    assert all(name in str(err.value) for name in preset_names())


# --- the spec ------------------------------------------------------------------------------------


def test_defaults_resolve() -> None:
    resolved = SyntheticSpec().resolve(seed_if_unset=42)
    assert resolved == SyntheticSpec(
        num_images=20,
        degradation_type="document-clean",
        seed=42,
        width=256,
        height=256,
        content_kinds=("documents",),
        dataset_name="synthetic",
    )
    assert resolved.resolve() == resolved and resolved.is_resolved
    assert SyntheticSpec(degradation_type="blur").resolve(seed_if_unset=1).content_kinds == CONTENT_KINDS
    assert SyntheticSpec(degradation_type="document-heavy").resolve(seed_if_unset=1).content_kinds == ("documents",)
    # Unset (None / empty) fields, as a protobuf request maps them, take the defaults too.
    unset = SyntheticSpec(num_images=None, degradation_type="", width=None, height=None, dataset_name="")
    assert unset.resolve(seed_if_unset=42) == resolved
    random_seed = SyntheticSpec().resolve().seed
    assert random_seed is not None and 0 <= random_seed < 2**32
    assert SyntheticSpec(content_kinds=["shapes", "textures"]).resolve().content_kinds == ("shapes", "textures")


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("num_images", {"num_images": 0}),
        ("num_images", {"num_images": 10_001}),
        ("num_images", {"num_images": True}),
        ("num_images", {"num_images": "5"}),
        ("degradation_type", {"degradation_type": "sharpen"}),
        ("degradation_type", {"degradation_type": "Document-Clean"}),
        ("seed", {"seed": -1}),
        ("seed", {"seed": 2**32}),
        ("width", {"width": 63}),
        ("width", {"width": 2049}),
        ("height", {"height": 0}),
        ("height", {"height": 4096}),
        ("content_kinds", {"content_kinds": ("documents", "documents")}),
        ("content_kinds", {"content_kinds": ("people",)}),
        ("content_kinds", {"content_kinds": ("unspecified",)}),
        ("content_kinds", {"content_kinds": "documents"}),
        ("dataset_name", {"dataset_name": "My_Data"}),
        ("dataset_name", {"dataset_name": "x" * 65}),
        ("dataset_name", {"dataset_name": "with space"}),
        ("dataset_name", {"dataset_name": "a/b"}),
    ],
)
def test_validation_names_the_field(field: str, fields: dict) -> None:
    bad = SyntheticSpec(**fields)
    with pytest.raises(InvalidArgument) as err:
        bad.validate()
    assert err.value.field == field and field in str(err.value)
    with pytest.raises(InvalidArgument):
        bad.resolve(seed_if_unset=1)


def test_validation_messages_give_the_allowed_values() -> None:
    cases = [
        (SyntheticSpec(num_images=0), "between 1 and 10000"),
        (SyntheticSpec(seed=-1), "between 0 and 4294967295"),
        (SyntheticSpec(width=10), "between 64 and 2048"),
        (SyntheticSpec(content_kinds=("x",)), "documents, textures, shapes"),
        (SyntheticSpec(dataset_name="A"), "[a-z0-9-]"),
    ]
    for bad, text in cases:
        with pytest.raises(InvalidArgument, match=re.escape(text)):
            bad.validate()
    for ok in ("a", "x" * 64, "scans-2026", "0-9"):
        SyntheticSpec(dataset_name=ok).validate()


def test_generating_needs_a_seed_and_a_clean_batch_id() -> None:
    # Checked at the call, before anything is generated.
    with pytest.raises(ValueError, match="seed"):
        generate_pairs(SyntheticSpec(num_images=1), BATCH)
    with pytest.raises(ValueError, match="batch_id"):
        generate_pairs(spec(num_images=1), "Bad_Id")
    with pytest.raises(InvalidArgument):
        generate_pairs(SyntheticSpec(num_images=0, seed=1), BATCH)


# --- names, batch ids, cancellation, manifest --------------------------------------------------------


def test_names_follow_the_pattern_and_kinds_cycle() -> None:
    s = spec(dataset_name="scans-2026", content_kinds=("shapes", "documents"), num_images=5, degradation_type="jpeg")
    pairs = list(generate_pairs(s, BATCH))
    assert [p.name for p in pairs] == [f"scans-2026_{BATCH}_{i:05d}" for i in range(5)]
    assert [p.kind for p in pairs] == ["shapes", "documents", "shapes", "documents", "shapes"]
    assert all(re.fullmatch(r"[a-z0-9-]+_[a-z0-9-]+_\d{5}", p.name) for p in pairs)
    assert all(p.name.startswith(f"scans-2026_{BATCH}_") for p in pairs)
    assert pairs[2].clean_key == f"clean/scans-2026_{BATCH}_00002.png"
    assert pairs[2].degraded_key == f"degraded/scans-2026_{BATCH}_00002.png"


def test_batch_ids() -> None:
    now = datetime(2026, 11, 22, 14, 5, 12)
    batch_id = make_batch_id(now, random.Random(0))
    assert re.fullmatch(r"20261122-140512-[0-9a-f]{4}", batch_id)
    assert batch_id == make_batch_id(now, random.Random(0))
    madrid = datetime(2026, 11, 22, 15, 5, 12, tzinfo=timezone(timedelta(hours=1)))
    assert make_batch_id(madrid, random.Random(0)) == batch_id  # aware times are converted to UTC
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", make_batch_id())


def test_cancellation_and_progress_callbacks() -> None:
    seen: list[str] = []
    calls = {"n": 0}

    def check_cancelled() -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            raise Cancelled("client went away")

    produced = []
    with pytest.raises(Cancelled):
        for pair in generate_pairs(
            spec(num_images=5), BATCH, check_cancelled=check_cancelled, on_pair=lambda p: seen.append(p.name)
        ):
            produced.append(pair.name)
    assert produced == seen == [f"synthetic_{BATCH}_00000", f"synthetic_{BATCH}_00001"]


def test_manifest() -> None:
    s = spec(degradation_type="blur", content_kinds=("textures", "shapes"), num_images=3, dataset_name="tex")
    pairs = list(generate_pairs(s, BATCH))
    created = datetime(2026, 11, 22, 14, 5, 12, tzinfo=UTC)
    data = manifest(s, BATCH, [p.meta() for p in pairs], created_at=created)
    assert manifest(s, BATCH, pairs, created_at=created) == data  # Pair objects or their meta() dicts
    assert json.loads(json.dumps(data)) == data
    assert data["batch_id"] == BATCH and data["seed"] == 1234 and data["pair_count"] == 3
    assert data["dataset_name"] == "tex" and data["dataset_prefix"] == f"tex_{BATCH}_"
    assert data["degradation_type"] == "blur" and data["content_kinds"] == ["textures", "shapes"]
    assert (data["width"], data["height"], data["bucket"]) == (96, 80, "training-data")
    assert data["created_at"] == "2026-11-22T14:05:12Z"
    assert data["request"] == {
        "num_images": 3,
        "degradation_type": "blur",
        "seed": 1234,
        "width": 96,
        "height": 80,
        "content_kinds": ["textures", "shapes"],
        "dataset_name": "tex",
    }
    for pair, entry in zip(pairs, data["pairs"], strict=True):
        assert entry["name"] == pair.name and entry["index"] == pair.index and entry["kind"] == pair.kind
        assert entry["clean_key"] == f"clean/{pair.name}.png" and entry["degraded_key"] == f"degraded/{pair.name}.png"
        assert entry["degradation"] == pair.params and entry["degradation"]["preset"] == "blur"
        assert entry["content"]["kind"] == pair.kind
