"""Inpainting on tiny SD1.5-shaped models (CPU): a regular model (the latent-mask blend) and a
9-channel inpainting UNet (a diffusers folder and a single file), unmasked pixels kept, the mask checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genmesh.errors import InvalidArgument
from servers.compute.devices import configure_threads
from servers.diffusion.builtin import build_tiny_sd15
from servers.diffusion.catalog import has_inpainting_unet
from servers.diffusion.families import ModelFamily
from servers.diffusion.generate import GenerationParams, check_mask, generate, resolve_params
from servers.diffusion.loading import load_model
from servers.diffusion.sources import ModelSource, detect_folder_family, detect_single_file_family
from tests.support.single_file import save_single_file, write_config_folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(int(os.environ.get("GENMESH_THREADS", "2")))
    return tmp_path_factory.getbasetemp() / "diffusion-cache"


@pytest.fixture(scope="module")
def tiny(cache_dir: Path):
    return load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=cache_dir, device="cpu")


@pytest.fixture(scope="module")
def inpainting_pipe(cache_dir: Path):
    """The tiny pipeline with a 9-channel UNet (4 latent + 1 mask + 4 masked-image channels)."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    base = build_tiny_sd15(cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        unet = UNet2DConditionModel.from_config({**base.unet.config, "in_channels": 9})
    components = {**base.components, "unet": unet}
    return StableDiffusionInpaintPipeline(**components)


@pytest.fixture(scope="module")
def inpainting_folder(inpainting_pipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-inpainting"
    inpainting_pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def init_and_mask(width: int = 64, height: int = 64) -> tuple[Image.Image, Image.Image]:
    """A colourful init image and a mask that re-draws the right half."""
    rng = np.random.default_rng(3)
    init = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (width // 2, 0, width, height))
    return init, mask


def params(**overrides) -> GenerationParams:
    init, mask = init_and_mask()
    values = {
        "prompt": "a red door",
        "steps": 4,
        "seed": 2,
        "scheduler": "euler",
        "init_image": init,
        "mask_image": mask,
    }
    return GenerationParams(**{**values, **overrides})


def halves(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    array = np.asarray(image, dtype=np.int16)
    return array[:, : image.width // 2], array[:, image.width // 2 :]


def test_a_regular_model_inpaints_with_the_latent_blend_and_keeps_unmasked_pixels(tiny) -> None:
    init, _ = init_and_mask()
    result = generate(tiny, params())
    assert result.inpaint_mode == "latent_blend" and result.params.strength == 1.0
    image = result.images[0]
    assert image.size == init.size
    kept, redrawn = halves(image)
    init_kept, init_redrawn = halves(init)
    assert np.abs(kept - init_kept).max() <= 2  # PNG-exact here: the mask keeps what it keeps
    assert np.abs(redrawn - init_redrawn).mean() > 20  # the white half was re-drawn
    again = generate(tiny, params()).images[0]
    assert again.tobytes() == image.tobytes()


def test_the_mask_must_match_the_init_image(tiny) -> None:
    _, mask = init_and_mask()
    init, _ = init_and_mask()
    with pytest.raises(InvalidArgument, match=r"mask_image is 32x64; it must be the init image's size \(64x64\)"):
        check_mask(mask.resize((32, 64)), init)
    with pytest.raises(InvalidArgument, match="mask_image needs an init image"):
        check_mask(mask, None)
    assert resolve_params(params(), ModelFamily.SD15, "euler").strength == 1.0  # inpainting's default


def test_a_nine_channel_unet_is_detected_and_used(cache_dir: Path, inpainting_folder: Path) -> None:
    source = ModelSource.parse(str(inpainting_folder))
    assert detect_folder_family(inpainting_folder) is ModelFamily.SD15 and has_inpainting_unet(source)
    model = load_model(source, cache_dir=cache_dir, device="cpu")
    assert model.inpainting
    init, _ = init_and_mask()
    result = generate(model, params())
    assert result.inpaint_mode == "inpainting_model"
    kept, _ = halves(result.images[0])
    assert np.abs(kept - halves(init)[0]).max() <= 2
    # Without a mask it still draws: txt2img and img2img run as inpainting with an all-white mask.
    plain = generate(model, GenerationParams(prompt="a door", width=96, height=64, steps=3, seed=1))
    assert plain.images[0].size == (96, 64) and plain.inpaint_mode == ""
    img2img = generate(model, GenerationParams(prompt="a door", steps=4, seed=1, init_image=init, strength=0.5))
    assert img2img.images[0].size == (64, 64)


def test_a_nine_channel_single_file_loads(cache_dir: Path, inpainting_pipe, tmp_path: Path) -> None:
    path = save_single_file(inpainting_pipe, tmp_path / "tiny-inpainting.safetensors")
    assert detect_single_file_family(path) is ModelFamily.SD15
    assert has_inpainting_unet(ModelSource.parse(str(path)))
    config = write_config_folder(inpainting_pipe, tmp_path / "config")
    model = load_model(
        ModelSource.parse(str(path), family="sd15", config_dir=config), cache_dir=cache_dir, device="cpu"
    )
    assert model.inpainting and generate(model, params()).inpaint_mode == "inpainting_model"
