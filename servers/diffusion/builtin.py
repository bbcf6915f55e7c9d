"""The built-in smoke-test model: a tiny SD1.5-shaped pipeline with random weights, made locally.

Nothing can be downloaded where genmesh runs its tests, so the default model is built here: the
SD1.5 architecture scaled down (UNet channels 32/32/64/64, VAE 16/32/32/32, a 2-layer CLIP text
encoder of width 32) with CLIP's real tokenizer and SD1.5's scheduler config. Weights come from a
fixed torch seed, so every build is identical; the pipeline is saved once as a diffusers folder in
a cache directory and loaded from there afterwards (~22 MB, loads in about half a second). Its
images are noise: it proves the plumbing (loading, schedulers, progress, cancel, previews,
encoding), not image quality.

A matching tiny AnimateDiff ``MotionAdapter`` is built the same way for the Video service.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from genmesh.errors import NotFound
from servers.diffusion.cache import build_once
from servers.diffusion.configs import bundled_config_dir
from servers.diffusion.tokenizer import load_clip_tokenizer

if TYPE_CHECKING:
    from diffusers import MotionAdapter, StableDiffusionPipeline

TINY_SD15 = "tiny-sd15"
TINY_MOTION_ADAPTER = "tiny-motion-adapter"
# Bump the suffix whenever a recipe below changes, so caches built from the old recipe are not reused.
_RECIPE_VERSION = "v1"
_SEED = 20251122

UNET_CHANNELS = (32, 32, 64, 64)
VAE_CHANNELS = (16, 32, 32, 32)
TEXT_WIDTH = 32
NORM_GROUPS = 8


def _tiny_sd15_components(cache_dir: Path) -> dict[str, object]:
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # Constructed in a fixed order under one seed: the order is part of the recipe.
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=UNET_CHANNELS,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=NORM_GROUPS,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=NORM_GROUPS,
        sample_size=64,
        scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TEXT_WIDTH,
            intermediate_size=4 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=TEXT_WIDTH,
            layer_norm_eps=1e-5,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    )
    scheduler = PNDMScheduler.from_pretrained(str(bundled_config_dir("sd15")), subfolder="scheduler")
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": load_clip_tokenizer(cache_dir),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


def build_tiny_sd15(cache_dir: Path) -> StableDiffusionPipeline:
    """Build the tiny pipeline in memory (deterministic; the global RNG state is left untouched)."""
    from diffusers import StableDiffusionPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        components = _tiny_sd15_components(Path(cache_dir))
    return StableDiffusionPipeline(**components)


def build_tiny_motion_adapter() -> MotionAdapter:
    """A tiny AnimateDiff motion adapter matching the tiny UNet's channels (deterministic)."""
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED + 1)
        return MotionAdapter(
            block_out_channels=UNET_CHANNELS,
            motion_layers_per_block=2,
            motion_num_attention_heads=2,
            motion_norm_num_groups=NORM_GROUPS,
            motion_max_seq_length=32,
            use_motion_mid_block=True,
        )


def _save(build: Callable[[], object]) -> Callable[[Path], None]:
    def save(tmp: Path) -> None:
        build().save_pretrained(str(tmp), safe_serialization=True)

    return save


def tiny_sd15_folder(cache_dir: Path) -> Path:
    """The tiny pipeline as a diffusers folder under ``cache_dir`` (built and saved on first use)."""
    cache_dir = Path(cache_dir)
    return build_once(
        cache_dir / "builtin" / f"{TINY_SD15}-{_RECIPE_VERSION}", _save(lambda: build_tiny_sd15(cache_dir))
    )


def tiny_motion_adapter_folder(cache_dir: Path) -> Path:
    """The tiny motion adapter as a diffusers folder under ``cache_dir`` (built on first use)."""
    dest = Path(cache_dir) / "builtin" / f"{TINY_MOTION_ADAPTER}-{_RECIPE_VERSION}"
    return build_once(dest, _save(build_tiny_motion_adapter))


BUILTIN_PIPELINES: dict[str, Callable[[Path], Path]] = {TINY_SD15: tiny_sd15_folder}


def builtin_folder(name: str, cache_dir: Path) -> Path:
    """The diffusers folder of the built-in pipeline ``name`` (see ``BUILTIN_PIPELINES``)."""
    try:
        make = BUILTIN_PIPELINES[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_PIPELINES))
        raise NotFound(f"unknown built-in model {name!r} (built-in models: {known})") from None
    return make(Path(cache_dir))
