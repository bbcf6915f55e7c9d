"""Full-size random weights for GPU benchmarks (nothing can be downloaded here): SD1.5 and an
AnimateDiff motion adapter with the real architectures, saved where the servers find user models.

With the pinned transformers, ``from_pretrained`` on a config-only folder raises "no file named
model.safetensors", so each component is built from its config instead. On a GPU the weights are
created there (seconds instead of minutes) and saved as fp16.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from servers.diffusion.configs import config_folder

SD15_NAME = "sd15-random"
MOTION_ADAPTER_NAME = "motion-adapter-v2-random"


def _build_device() -> contextlib.AbstractContextManager:
    return torch.device("cuda") if torch.cuda.is_available() else contextlib.nullcontext()


def _dtype() -> torch.dtype:
    return torch.float16 if torch.cuda.is_available() else torch.float32


def build_full_size_sd15(models_dir: Path, cache_dir: Path) -> Path:
    """SD1.5-size random weights saved as a diffusers folder (what a user's model looks like)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = models_dir / SD15_NAME
    if (folder / "model_index.json").exists():
        return folder
    config = config_folder("sd15", cache_dir)
    torch.manual_seed(0)
    with _build_device():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(config / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(config / "vae")))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(str(config / "text_encoder")))
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(str(config / "tokenizer")),
        scheduler=PNDMScheduler.from_pretrained(str(config), subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(dtype=_dtype()).save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_full_size_motion_adapter(adapters_dir: Path) -> Path:
    """A motion adapter with the v1.5-v2 architecture (motion mid block, 32 positions), random weights."""
    from diffusers import MotionAdapter

    folder = adapters_dir / MOTION_ADAPTER_NAME
    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(1)
    with _build_device():
        adapter = MotionAdapter(use_motion_mid_block=True, motion_max_seq_length=32)
    adapter.to(dtype=_dtype()).save_pretrained(str(folder), safe_serialization=True)
    return folder
