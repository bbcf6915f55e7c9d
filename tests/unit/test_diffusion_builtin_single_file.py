"""The built-in tiny model (deterministic builds, cached folder) and the single-file (original LDM
layout) round trip: tiny pipeline -> .safetensors -> from_single_file -> the same images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from servers.compute.devices import configure_threads
from servers.diffusion.builtin import build_tiny_motion_adapter, tiny_motion_adapter_folder, tiny_sd15_folder
from servers.diffusion.configs import bundled_config_dir
from servers.diffusion.generate import GenerationParams, generate
from servers.diffusion.loading import load_model
from servers.diffusion.sources import ModelSource, SourceKind, detect_single_file_family
from tests.support.single_file import save_single_file, unet_to_original, vae_to_original, write_config_folder


@pytest.fixture(scope="session")
def diffusion_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(int(os.environ.get("GENMESH_THREADS", "2")))
    return tmp_path_factory.getbasetemp() / "diffusion-cache"


@pytest.fixture(scope="module")
def tiny(diffusion_cache: Path):
    return load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=diffusion_cache, device="cpu")


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.rglob("*.safetensors")):
        for key, value in load_file(str(path)).items():
            tensors[f"{path.relative_to(folder)}:{key}"] = value
    return tensors


def test_two_builds_give_identical_weights(tmp_path: Path, diffusion_cache: Path) -> None:
    first = tiny_sd15_folder(diffusion_cache)
    second = tiny_sd15_folder(tmp_path / "another-cache")
    a, b = _tensors(first), _tensors(second)
    assert a.keys() == b.keys() and len(a) > 500
    assert all(torch.equal(a[key], b[key]) for key in a)
    size = sum(path.stat().st_size for path in first.rglob("*") if path.is_file())
    assert size < 30_000_000
    assert tiny_sd15_folder(diffusion_cache) == first  # reused, not rebuilt


def test_building_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_motion_adapter_folder(tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_motion_adapter_is_deterministic(diffusion_cache: Path) -> None:
    from diffusers import MotionAdapter

    saved = MotionAdapter.from_pretrained(str(tiny_motion_adapter_folder(diffusion_cache)), local_files_only=True)
    fresh = build_tiny_motion_adapter()
    assert all(torch.equal(x, y) for x, y in zip(saved.state_dict().values(), fresh.state_dict().values(), strict=True))


def test_single_file_round_trip_is_bit_identical(tiny, tmp_path: Path, diffusion_cache: Path) -> None:
    pipe = tiny.pipeline()
    checkpoint = save_single_file(pipe, tmp_path / "tiny.safetensors")
    config_dir = write_config_folder(pipe, tmp_path / "tiny-config")
    assert detect_single_file_family(checkpoint) == "sd15"

    source = ModelSource.parse(str(checkpoint), config_dir=config_dir)
    assert source.kind is SourceKind.SINGLE_FILE
    reloaded = load_model(source, cache_dir=diffusion_cache, device="cpu")
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(reloaded.pipeline(), name).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(torch.equal(ours[key], theirs[key]) for key in ours), name

    params = GenerationParams("a lighthouse at dusk", width=64, height=64, steps=4, seed=11, scheduler="euler")
    assert generate(tiny, params).images[0].tobytes() == generate(reloaded, params).images[0].tobytes()


def test_converter_matches_diffusers_reading_of_the_real_sd15_layout() -> None:
    """On the real SD1.5 architecture (meta tensors): diffusers' own LDM -> diffusers conversion of
    our output gives back exactly the model's parameter names."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    folder = bundled_config_dir("sd15")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae")))
    original_unet = {
        f"model.diffusion_model.{k}": v for k, v in unet_to_original(unet.state_dict(), unet.config).items()
    }
    assert "model.diffusion_model.output_blocks.11.0.skip_connection.weight" in original_unet  # diffusers' "v1" marker
    assert set(convert_ldm_unet_checkpoint(original_unet, unet.config)) == set(unet.state_dict())
    original_vae = {f"first_stage_model.{k}": v for k, v in vae_to_original(vae.state_dict(), vae.config).items()}
    assert original_vae["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert set(convert_ldm_vae_checkpoint(original_vae, vae.config)) == set(vae.state_dict())


def test_tiny_motion_adapter_drives_animatediff_with_previews(tiny, diffusion_cache: Path) -> None:
    from diffusers import AnimateDiffPipeline, MotionAdapter

    from servers.diffusion.progress import StepCallback
    from servers.diffusion.schedulers import make_scheduler

    class Recorder:
        def __init__(self) -> None:
            self.previews: list = []

        def check_cancelled(self) -> None:
            pass

        def progress(self, step: int, total_steps: int, preview=None) -> None:
            if preview is not None:
                self.previews.append(preview)

    adapter = MotionAdapter.from_pretrained(str(tiny_motion_adapter_folder(diffusion_cache)), local_files_only=True)
    ddim = make_scheduler("ddim", tiny.pipeline().scheduler.config)  # AnimateDiff's usual scheduler
    pipe = AnimateDiffPipeline.from_pipe(tiny.pipeline(), motion_adapter=adapter, scheduler=ddim, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    recorder = Recorder()
    output = pipe(
        "a cat walking",
        num_frames=8,
        width=64,
        height=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=StepCallback(recorder, "sd15", preview_every=1),
    )
    assert len(output.frames[0]) == 8 and output.frames[0][0].size == (64, 64)
    assert [(p.width, p.height) for p in recorder.previews] == [(8, 8), (8, 8)]
