"""Test tooling: tiny SD1.5 models built from the public architectures' own configs, scaled down.

The built-in smoke-test models (``servers.diffusion.builtin``) change attention heads and norm
groups too, which no weight shape records, so their single files need a config folder of their own.
These keep every setting of the bundled SD1.5 / AnimateDiff v2 configs and change only what the
weights' shapes show (channels, widths, depth), so a single file written from them loads with the
config the server derives from the file itself (``servers.diffusion.checkpoint_config``), as a
downloaded checkpoint of an unusual size would. Random weights from a fixed seed; ~15 MB.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from servers.diffusion.configs import bundled_config_dir
from servers.diffusion.motion import motion_config_dir
from servers.diffusion.tokenizer import load_clip_tokenizer

if TYPE_CHECKING:
    from diffusers import MotionAdapter, StableDiffusionPipeline

SEED = 20261207
UNET_CHANNELS = [32, 32, 64, 64]  # divisible by SD1.5's 32 norm groups and 8 heads
VAE_CHANNELS = [32, 32, 32, 32]
TEXT_WIDTH = 48  # divisible by CLIP ViT-L's 12 heads
TEXT_LAYERS = 2
NOT_SETTINGS = ("architectures", "model_type")  # what a saved transformers config records about itself


def _bundled(*parts: str) -> dict[str, Any]:
    config = json.loads(bundled_config_dir("sd15").joinpath(*parts).read_text())
    return {key: value for key, value in config.items() if not key.startswith("_") and key not in NOT_SETTINGS}


def tiny_sd15(cache_dir: Path) -> StableDiffusionPipeline:
    """SD1.5's configs with small channels, a 48-wide 2-layer text encoder; deterministic."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel.from_config(
            {**_bundled("unet", "config.json"), "block_out_channels": UNET_CHANNELS, "cross_attention_dim": TEXT_WIDTH}
        )
        vae = AutoencoderKL.from_config({**_bundled("vae", "config.json"), "block_out_channels": VAE_CHANNELS})
        text = {**_bundled("text_encoder", "config.json"), "hidden_size": TEXT_WIDTH, "projection_dim": TEXT_WIDTH}
        text_encoder = CLIPTextModel(
            CLIPTextConfig(**{**text, "intermediate_size": 4 * TEXT_WIDTH, "num_hidden_layers": TEXT_LAYERS})
        )
    scheduler = PNDMScheduler.from_pretrained(str(bundled_config_dir("sd15")), subfolder="scheduler")
    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=load_clip_tokenizer(Path(cache_dir)),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def tiny_motion_adapter() -> MotionAdapter:
    """AnimateDiff v2's config with the tiny UNet's channels (so it fits :func:`tiny_sd15`)."""
    from diffusers import MotionAdapter

    config = json.loads((motion_config_dir("v2") / "config.json").read_text())
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 1)
        return MotionAdapter.from_config({**config, "block_out_channels": UNET_CHANNELS})
