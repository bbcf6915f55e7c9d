"""LoRAs on the tiny SD1.5 pipeline (CPU), with tiny LoRA files the tests write in both layouts:
prompt syntax, limits, layout and family read from the file, the output changes, weight 0 is no LoRA,
both layouts give the same image, switching never reloads the base, the LRU budget, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from prometheus_client import REGISTRY

from genmesh.errors import InvalidArgument, NotFound
from servers.compute.devices import configure_threads
from servers.diffusion.catalog import ModelCatalog
from servers.diffusion.families import ModelFamily
from servers.diffusion.generate import GenerationParams, generate
from servers.diffusion.loading import load_model
from servers.diffusion.lora import (
    LoraAdapters,
    LoraCatalog,
    LoraRequest,
    check_loras,
    requested_loras,
    split_prompt_loras,
)
from servers.diffusion.sources import ModelSource
from servers.image.engine import ImageEngine
from servers.image.types import ImageRequest
from servers.runtime import metrics
from tests.support.lora import lora_state, sdxl_shaped_state, to_kohya, write, write_pair


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(int(os.environ.get("GENMESH_THREADS", "2")))
    return tmp_path_factory.getbasetemp() / "diffusion-cache"


@pytest.fixture(scope="module")
def tiny(cache_dir: Path):
    return load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=cache_dir, device="cpu")


@pytest.fixture(scope="module")
def lora_dir(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lora")
    pipe = tiny.pipeline()
    write_pair(pipe, folder, "style-a", seed=1)
    write_pair(pipe, folder, "style-b", seed=2)
    write(sdxl_shaped_state(), folder / "xl-style.safetensors")
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    return folder


@pytest.fixture(scope="module")
def catalog(lora_dir: Path) -> LoraCatalog:
    return LoraCatalog(lora_dir)


def run(model, catalog: LoraCatalog, loras: list[tuple[str, float]], **overrides) -> bytes:
    resolved = catalog.resolve([LoraRequest(name, weight) for name, weight in loras], model.family)
    values = {"prompt": "a red bicycle", "width": 64, "height": 64, "steps": 3, "seed": 5, "scheduler": "euler"}
    return generate(model, GenerationParams(**{**values, **overrides}, loras=resolved)).images[0].tobytes()


def test_prompt_syntax_is_taken_out_of_the_prompt() -> None:
    text, loras = split_prompt_loras("a castle, <lora:style-a:0.8>, at dusk <LORA:style-b>")
    assert text == "a castle, at dusk"
    assert loras == [LoraRequest("style-a", 0.8, True), LoraRequest("style-b", 1.0, True)]
    prompt, merged = requested_loras("<lora:style-b:-0.5> a castle", [LoraRequest("style-a", 1.0)])
    assert prompt == "a castle" and [lora.name for lora in merged] == ["style-a", "style-b"]
    with pytest.raises(InvalidArgument, match=r"prompt: .*weight 'x', not a number"):
        split_prompt_loras("a <lora:style-a:x>")
    with pytest.raises(InvalidArgument, match="prompt: must not be empty once"):
        requested_loras("<lora:style-a:1>", [])


def test_limits_name_the_field_and_the_range() -> None:
    with pytest.raises(InvalidArgument, match=r"loras\[1\]\.weight must be between -2 and 2 \(got 2\.5\)") as caught:
        check_loras([LoraRequest("a", 1.0), LoraRequest("b", 2.5)])
    assert caught.value.field == "loras[1].weight"
    with pytest.raises(InvalidArgument, match=r"loras: at most 5 LoRAs per request"):
        check_loras([LoraRequest(f"l{i}") for i in range(6)])
    with pytest.raises(InvalidArgument, match=r"loras\[1\]\.name: LoRA 'a' is given twice \(from the prompt\)"):
        requested_loras("x <lora:a:0.5>", [LoraRequest("a")])
    with pytest.raises(InvalidArgument, match=r"loras\[0\]\.name: must not be empty"):
        check_loras([LoraRequest(" ")])
    with pytest.raises(InvalidArgument, match=r"loras\[0\]\.weight"):
        check_loras([LoraRequest("a", float("nan"))])


def test_the_file_tells_its_layout_and_family(catalog: LoraCatalog) -> None:
    found = {name: (file.layout, file.family) if file else problem for name, _, file, problem in catalog.entries()}
    assert found["style-a"] == ("diffusers", ModelFamily.SD15)
    assert found["style-a-kohya"] == ("kohya", ModelFamily.SD15)
    assert found["xl-style"] == ("kohya", ModelFamily.SDXL)
    assert "not a readable .safetensors file" in found["broken"]


def test_unknown_wrong_family_and_corrupt_loras_are_refused(catalog: LoraCatalog) -> None:
    with pytest.raises(NotFound, match=r"loras\[1\]\.name: unknown LoRA 'nope'") as caught:
        catalog.resolve([LoraRequest("style-a"), LoraRequest("nope")], ModelFamily.SD15)
    assert caught.value.field == "loras[1].name"
    with pytest.raises(InvalidArgument, match=r"loras\[0\]\.name: LoRA 'xl-style' is for sdxl models") as wrong:
        catalog.resolve([LoraRequest("xl-style")], ModelFamily.SD15, model_name="tiny-sd15")
    assert wrong.value.field == "loras[0].name"
    with pytest.raises(InvalidArgument, match=r"loras\[0\]\.name: LoRA 'broken' is not a readable"):
        catalog.resolve([LoraRequest("broken")], ModelFamily.SD15)


def test_a_lora_changes_the_image_weight_zero_is_none_and_runs_repeat(tiny, catalog: LoraCatalog) -> None:
    base = run(tiny, catalog, [])
    styled = run(tiny, catalog, [("style-a", 1.0)])
    assert styled != base
    assert run(tiny, catalog, [("style-a", 1.0)]) == styled  # the same request twice: the same bytes
    assert run(tiny, catalog, [("style-a", 0.0)]) == base
    assert run(tiny, catalog, [("style-a", 0.5)]) not in (base, styled)
    assert run(tiny, catalog, []) == base  # switched off again: the base layers alone


def test_both_layouts_give_the_same_image(tiny, catalog: LoraCatalog) -> None:
    assert run(tiny, catalog, [("style-b", 0.7)]) == run(tiny, catalog, [("style-b-kohya", 0.7)])
    mixed = run(tiny, catalog, [("style-a", 0.6), ("style-b", -0.4)])
    assert mixed == run(tiny, catalog, [("style-a-kohya", 0.6), ("style-b-kohya", -0.4)])


def test_switching_loras_never_reloads_the_base(cache_dir: Path, lora_dir: Path, tmp_path: Path) -> None:
    engine = ImageEngine(
        ModelCatalog(tmp_path / "models"), cache_dir=cache_dir, device="cpu", threads=1, loras=LoraCatalog(lora_dir)
    )
    loads = {"service": metrics._process_service}

    def model_loads() -> float:
        return REGISTRY.get_sample_value("genmesh_model_load_seconds_count", loads) or 0.0

    try:
        outputs, adapters = [], None
        for names in (["style-a"], ["style-b"], ["style-a"], [], ["style-a", "style-b"]):
            request = ImageRequest(
                prompt="a boat", width=64, height=64, steps=2, seed=3, loras=tuple(LoraRequest(n) for n in names)
            )
            entry = engine.catalog.resolve("")
            resolved = engine.resolve_loras(request, entry)
            outputs.append(engine.generate(request, None, _Quiet(), loras=resolved).result.images[0].tobytes())
            if adapters is None:
                first_loads = model_loads()
            with engine.models.use(entry.name) as model:
                adapters = model.loras
        assert model_loads() == first_loads  # one base load, before the first image
        assert adapters.loads == 2  # each LoRA read and injected once
        assert outputs[0] == outputs[2] and len(set(outputs)) == 4
    finally:
        engine.close()


def test_least_recently_used_adapters_unload_beyond_the_budget(cache_dir: Path, catalog: LoraCatalog) -> None:
    model = load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=cache_dir, device="cpu")
    pipe = model.pipeline()
    adapters = LoraAdapters(budget_bytes=1)  # nothing beyond the active set stays
    for name in ("style-a", "style-b", "style-a"):
        adapters.activate(pipe, catalog.resolve([LoraRequest(name)], model.family))
        assert [file.name for file in adapters.loaded.values()] == [name]
        present = {adapter for names in pipe.get_list_adapters().values() for adapter in names}
        assert present == set(adapters.loaded)
    assert adapters.loads == 3


def test_a_lora_that_does_not_fit_is_refused_and_the_model_keeps_working(
    tiny, catalog: LoraCatalog, tmp_path: Path
) -> None:
    # SD1.5-sized shapes (768-wide cross-attention): the family matches, the tiny model's layers do not.
    state = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.zeros(4, 768),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": torch.zeros(320, 4),
    }
    folder = tmp_path / "lora"
    write(state, folder / "real-size.safetensors")
    write(to_kohya(lora_state(tiny.pipeline().unet, None, seed=9)), folder / "fits.safetensors")
    other = LoraCatalog(folder)
    base = run(tiny, catalog, [])
    with pytest.raises(InvalidArgument, match=r"loras\[0\]\.name: LoRA 'real-size' does not fit this model"):
        run(tiny, other, [("real-size", 1.0)])
    assert run(tiny, catalog, []) == base
    assert run(tiny, other, [("fits", 1.0)]) != base


class _Quiet:
    def check_cancelled(self) -> None:
        return None

    def progress(self, step, total_steps, preview=None) -> None:
        return None

    def output(self, payload, step=None, total_steps=None) -> None:
        return None


def test_a_lora_applies_to_the_base_unet_under_the_motion_modules(cache_dir: Path, catalog: LoraCatalog) -> None:
    from servers.diffusion.animate import VideoParams, animate

    video = load_model(
        ModelSource.parse("builtin:tiny-sd15"),
        cache_dir=cache_dir,
        device="cpu",
        motion_adapter=ModelSource.parse("builtin:tiny-motion-adapter"),
    )

    def frames(loras: list[tuple[str, float]]) -> list[bytes]:
        resolved = catalog.resolve([LoraRequest(name, weight) for name, weight in loras], video.family)
        params = VideoParams(prompt="waves", width=64, height=64, num_frames=4, steps=2, seed=4, loras=resolved)
        return [frame.tobytes() for frame in animate(video, params, _Quiet()).frames]

    base = frames([])
    styled = frames([("style-a-kohya", 1.0)])
    assert styled != base and frames([("style-a", 1.0)]) == styled
    assert frames([("style-a", 0.0)]) == base
    # The motion modules carry no adapter: LoRA layers sit only on the 2D UNet's and text encoder's projections.
    wrapped = [
        name for name, module in video.pipeline(video.root_task).unet.named_modules() if hasattr(module, "lora_A")
    ]
    assert wrapped and not [name for name in wrapped if "motion_modules" in name]
