"""A pulled single file loads without a config of its own (issue #23): the server derives the
architecture from the checkpoint's tensor shapes (servers/diffusion/checkpoint_config.py), on a
tiny SD1.5 and a tiny motion module written as users download them (tests/support/tiny_models.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from genmesh.errors import InvalidArgument
from servers.compute.devices import configure_threads
from servers.diffusion.checkpoint_config import checkpoint_config_folder
from servers.diffusion.configs import bundled_config_dir, config_folder
from servers.diffusion.families import ModelFamily
from servers.diffusion.generate import GenerationParams, generate
from servers.diffusion.loading import load_model
from servers.diffusion.motion import load_motion_adapter
from servers.diffusion.sources import ModelSource, read_checkpoint_shapes
from tests.support.single_file import (
    TEXT_ENCODER_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    save_motion_adapter_single_file,
    save_single_file,
    unet_to_original,
    vae_to_original,
)
from tests.support.tiny_models import tiny_motion_adapter, tiny_sd15


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(int(os.environ.get("GENMESH_THREADS", "2")))
    return tmp_path_factory.mktemp("diffusion-cache")


def public(config) -> dict:
    return {key: value for key, value in dict(config).items() if not key.startswith("_")}


def test_a_tiny_single_file_generates_as_its_diffusers_folder_does(cache_dir: Path, tmp_path: Path) -> None:
    pipe = tiny_sd15(cache_dir)
    checkpoint = save_single_file(pipe, tmp_path / "tiny.safetensors")
    pipe.save_pretrained(str(tmp_path / "tiny-folder"), safe_serialization=True)
    derived = checkpoint_config_folder(read_checkpoint_shapes(checkpoint), ModelFamily.SD15, cache_dir, where="tiny")
    assert derived != config_folder("sd15", cache_dir) and derived.parent == cache_dir / "configs"
    from_file = load_model(ModelSource.parse(str(checkpoint)), cache_dir=cache_dir, device="cpu")
    from_folder = load_model(ModelSource.parse(str(tmp_path / "tiny-folder")), cache_dir=cache_dir, device="cpu")
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(from_folder.pipeline(), name), getattr(from_file.pipeline(), name)
        if name != "text_encoder":  # the derived architecture is the model's own
            assert public(ours.config) == public(theirs.config), name
        state, loaded = ours.state_dict(), theirs.state_dict()
        assert state.keys() == loaded.keys() and all(torch.equal(state[key], loaded[key]) for key in state), name
    params = GenerationParams("a lighthouse", width=64, height=64, steps=2, seed=5)  # its own scheduler (PNDM)
    assert generate(from_file, params).images[0].tobytes() == generate(from_folder, params).images[0].tobytes()


def test_a_standard_sd15_checkpoint_derives_the_bundled_config(cache_dir: Path) -> None:
    """The real SD1.5 architecture's shapes (meta tensors, no memory) give back the bundled folder."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = bundled_config_dir("sd15")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae")))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder")))
    shapes = {UNET_PREFIX + k: tuple(v.shape) for k, v in unet_to_original(unet.state_dict(), unet.config).items()}
    shapes |= {VAE_PREFIX + k: tuple(v.shape) for k, v in vae_to_original(vae.state_dict(), vae.config).items()}
    shapes |= {f"{TEXT_ENCODER_PREFIX}text_model.{k.removeprefix('text_model.')}": tuple(v.shape)
               for k, v in text.state_dict().items()}  # fmt: skip
    assert checkpoint_config_folder(shapes, ModelFamily.SD15, cache_dir, where="sd15") == config_folder(
        "sd15", cache_dir
    )
    inpainting = {**shapes, f"{UNET_PREFIX}input_blocks.0.0.weight": (320, 9, 3, 3)}
    derived = checkpoint_config_folder(inpainting, ModelFamily.SD15, cache_dir, where="sd15-inpainting")
    assert UNet2DConditionModel.load_config(str(derived / "unet"))["in_channels"] == 9


def test_a_layout_the_standard_heads_do_not_divide_is_refused_naming_model(cache_dir: Path, tmp_path: Path) -> None:
    from servers.diffusion.builtin import build_tiny_sd15

    checkpoint = save_single_file(build_tiny_sd15(cache_dir), tmp_path / "odd.safetensors")  # 8 norm groups
    with pytest.raises(InvalidArgument) as refused:
        checkpoint_config_folder(read_checkpoint_shapes(checkpoint), ModelFamily.SD15, cache_dir, where="odd")
    assert refused.value.field == "model" and "odd has VAE channels of [16, 32, 32, 32]" in refused.value.message


def test_a_tiny_motion_module_single_file_loads_without_a_config(cache_dir: Path, tmp_path: Path) -> None:
    adapter = tiny_motion_adapter()
    path = save_motion_adapter_single_file(adapter, tmp_path / "mm_tiny.safetensors")
    loaded = load_motion_adapter(ModelSource.parse(str(path)), cache_dir=cache_dir, dtype=torch.float32)
    assert list(loaded.config.block_out_channels) == list(adapter.config.block_out_channels)
    state, got = adapter.state_dict(), loaded.state_dict()
    assert state.keys() == got.keys() and all(torch.equal(state[key], got[key]) for key in state)
