"""Test tooling: an SD1.5-shaped diffusers folder smaller than the built-in tiny model.

The built-in model keeps SD1.5's full layout (four UNet levels, two layers each, attention at three
of them), so inductor generates a few hundred kernels for it: a CPU compile took ~115 s of a
two-core CI run. The compile tests check the compile path (graphs, warm-up before SERVING, no
compile at request time), not the model, so they compile this one: two UNet levels of one layer and
a one-layer VAE, the same text encoder, tokenizer and scheduler (and still a VAE that downsamples
by 8, as every SD1.5 size check assumes).
"""

from __future__ import annotations

from pathlib import Path

import torch

from servers.diffusion.builtin import NORM_GROUPS, TEXT_WIDTH, build_tiny_sd15


def save_micro_sd15(cache_dir: Path, folder: Path) -> Path:
    """Write the micro pipeline as a diffusers folder at ``folder`` (deterministic)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    pipe = build_tiny_sd15(cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        pipe.unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=4,
            norm_num_groups=NORM_GROUPS,
        )
        pipe.vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=4,
            sample_size=64,
            scaling_factor=0.18215,
        )
    pipe.register_modules(unet=pipe.unet, vae=pipe.vae)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
