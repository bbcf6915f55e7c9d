"""Tiny LoRA files made locally for tests: the same random low-rank weights written in the
diffusers/PEFT layout and in the kohya/AUTOMATIC1111 layout, plus an SDXL-shaped file (2048-wide
cross-attention, a second text encoder) for the family checks. Nothing comes from a model hub."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _targets(module: torch.nn.Module, suffixes: tuple[str, ...]) -> dict[str, torch.nn.Linear]:
    found = {}
    for name, child in module.named_modules():
        name = name.removesuffix(".base_layer")  # a layer that already carries PEFT adapters
        if isinstance(child, torch.nn.Linear) and name.endswith(suffixes) and "motion_modules" not in name:
            found[name] = child
    return found


def lora_state(unet: torch.nn.Module, text_encoder: torch.nn.Module | None, *, seed: int, rank: int = 4,
               scale: float = 0.3) -> dict[str, torch.Tensor]:  # fmt: skip
    """Random LoRA weights for every attention projection of ``unet`` (and ``text_encoder``), in the
    diffusers/PEFT layout (``unet.<module>.lora_A.weight`` / ``lora_B.weight``; alpha = rank)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    parts = [("unet", unet, UNET_TARGETS)]
    if text_encoder is not None:
        parts.append(("text_encoder", text_encoder, TEXT_TARGETS))
    for prefix, module, suffixes in parts:
        for name, linear in sorted(_targets(module, suffixes).items()):
            down = torch.randn(rank, linear.in_features, generator=generator) * scale
            up = torch.randn(linear.out_features, rank, generator=generator) * scale
            state[f"{prefix}.{name}.lora_A.weight"] = down.contiguous()
            state[f"{prefix}.{name}.lora_B.weight"] = up.contiguous()
    return state


def to_kohya(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in the kohya/AUTOMATIC1111 layout (``lora_unet_...``, ``lora_te_...``, with
    ``lora_down``/``lora_up`` and an ``alpha`` equal to the rank: the same scale)."""
    kohya: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora_", 1)
        name = ("lora_unet_" if prefix == "unet" else "lora_te_") + module.replace(".", "_")
        if kind.startswith("A"):
            kohya[f"{name}.lora_down.weight"] = value
            kohya[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
        else:
            kohya[f"{name}.lora_up.weight"] = value
    return kohya


def sdxl_shaped_state(rank: int = 2) -> dict[str, torch.Tensor]:
    """A few tensors shaped as an SDXL LoRA's (kohya layout, SGM block names): enough for detection."""
    base = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
    return {
        f"{base}.lora_down.weight": torch.zeros(rank, 2048),
        f"{base}.lora_up.weight": torch.zeros(640, rank),
        f"{base}.alpha": torch.tensor(float(rank)),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(rank, 1280),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(1280, rank),
    }


def write(state: dict[str, torch.Tensor], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


def write_pair(pipe, folder: Path, name: str, *, seed: int) -> tuple[Path, Path]:
    """``<name>.safetensors`` (diffusers layout) and ``<name>-kohya.safetensors`` (kohya layout) with the
    same weights, for ``pipe``'s UNet and text encoder."""
    state = lora_state(pipe.unet, pipe.text_encoder, seed=seed)
    return write(state, folder / f"{name}.safetensors"), write(to_kohya(state), folder / f"{name}-kohya.safetensors")
