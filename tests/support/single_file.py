"""Test tooling: diffusers models written as the single files users download (original layouts).

Users bring single files; genmesh only reads them. These writers make such files from the built-in
tiny models, so the loading paths are tested without real weights.

Diffusers SD1.5 pipeline -> one original-layout ("LDM"/A1111/civitai) checkpoint file.

Community SD1.5 models are distributed as a single .safetensors in the key layout of the original
CompVis code (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``), which ``from_single_file`` converts back to diffusers. The
installed diffusers only converts in that direction, so the reverse mapping is written here, derived
from the UNet/VAE configs instead of fixed key lists: it works for the real SD1.5 architecture and
for the scaled-down built-in model alike. Its main use is testing: the tiny pipeline converted by
:func:`save_single_file` and reloaded with ``from_single_file(path, config=write_config_folder(pipe))``
must give bit-identical images. SDXL conversion is not implemented (SDXL checkpoints load fine; they
just cannot be written).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genmesh.errors import InvalidArgument

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline, MotionAdapter, StableDiffusionPipeline

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_ENCODER_PREFIX = "cond_stage_model.transformer."

# Inside a UNet resnet block, diffusers' names -> the original ones.
_UNET_RESNET_RENAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET_RENAMES = {"conv_shortcut": "nin_shortcut"}
# The VAE's mid-block attention: diffusers uses linear layers, the original 1x1 convolutions.
_VAE_ATTENTION_RENAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_ATTENTION_CONV = {"q", "k", "v", "proj_out"}

# A prefix map entry: (diffusers module prefix, original module prefix, renames inside the module).
_Entry = tuple[str, str, dict[str, str]]


def _unet_prefix_map(config: Any) -> list[_Entry]:
    layers = config.layers_per_block
    blocks = len(config.block_out_channels)
    entries: list[_Entry] = [
        ("time_embedding.linear_1.", "time_embed.0.", {}),
        ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("conv_in.", "input_blocks.0.0.", {}),
        ("conv_norm_out.", "out.0.", {}),
        ("conv_out.", "out.2.", {}),
        ("mid_block.resnets.0.", "middle_block.0.", _UNET_RESNET_RENAMES),
        ("mid_block.attentions.0.", "middle_block.1.", {}),
        ("mid_block.resnets.1.", "middle_block.2.", _UNET_RESNET_RENAMES),
    ]
    for block in range(blocks):
        for layer in range(layers):
            index = 1 + block * (layers + 1) + layer
            entries.append((f"down_blocks.{block}.resnets.{layer}.", f"input_blocks.{index}.0.", _UNET_RESNET_RENAMES))
            entries.append((f"down_blocks.{block}.attentions.{layer}.", f"input_blocks.{index}.1.", {}))
        if block < blocks - 1:
            index = (block + 1) * (layers + 1)
            entries.append((f"down_blocks.{block}.downsamplers.0.conv.", f"input_blocks.{index}.0.op.", {}))
    for block in range(blocks):
        for layer in range(layers + 1):
            index = block * (layers + 1) + layer
            entries.append((f"up_blocks.{block}.resnets.{layer}.", f"output_blocks.{index}.0.", _UNET_RESNET_RENAMES))
            entries.append((f"up_blocks.{block}.attentions.{layer}.", f"output_blocks.{index}.1.", {}))
        if block < blocks - 1:
            # The upsampler follows the last layer's resnet, and its attention when the block has one.
            slot = 2 if config.up_block_types[block].startswith("CrossAttn") else 1
            index = block * (layers + 1) + layers
            entries.append((f"up_blocks.{block}.upsamplers.0.conv.", f"output_blocks.{index}.{slot}.conv.", {}))
    return entries


def _vae_prefix_map(config: Any) -> list[_Entry]:
    layers = config.layers_per_block
    blocks = len(config.block_out_channels)
    entries: list[_Entry] = [
        ("quant_conv.", "quant_conv.", {}),
        ("post_quant_conv.", "post_quant_conv.", {}),
    ]
    for part in ("encoder", "decoder"):
        entries += [
            (f"{part}.conv_in.", f"{part}.conv_in.", {}),
            (f"{part}.conv_out.", f"{part}.conv_out.", {}),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _VAE_RESNET_RENAMES),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _VAE_RESNET_RENAMES),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTENTION_RENAMES),
        ]
    for block in range(blocks):
        for layer in range(layers):
            entries.append(
                (
                    f"encoder.down_blocks.{block}.resnets.{layer}.",
                    f"encoder.down.{block}.block.{layer}.",
                    _VAE_RESNET_RENAMES,
                )
            )
        if block < blocks - 1:
            entries.append(
                (f"encoder.down_blocks.{block}.downsamplers.0.conv.", f"encoder.down.{block}.downsample.conv.", {})
            )
    for block in range(blocks):
        original = blocks - 1 - block  # the original decoder numbers its levels from the bottom
        for layer in range(layers + 1):
            entries.append(
                (
                    f"decoder.up_blocks.{block}.resnets.{layer}.",
                    f"decoder.up.{original}.block.{layer}.",
                    _VAE_RESNET_RENAMES,
                )
            )
        if block < blocks - 1:
            entries.append(
                (f"decoder.up_blocks.{block}.upsamplers.0.conv.", f"decoder.up.{original}.upsample.conv.", {})
            )
    return entries


def _rename(key: str, entries: list[_Entry], component: str) -> str:
    for diffusers_prefix, original_prefix, renames in entries:
        if key.startswith(diffusers_prefix):
            rest = key[len(diffusers_prefix) :]
            for old, new in renames.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            return original_prefix + rest
    raise InvalidArgument(f"{component}: no original-layout name for parameter {key!r}", field="model")


def unet_to_original(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A diffusers SD1.5-layout UNet state dict in the original key layout (without prefix)."""
    entries = _unet_prefix_map(config)
    return {_rename(key, entries, "unet"): value for key, value in state_dict.items()}


def vae_to_original(state_dict: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in the original key layout (without prefix)."""
    entries = _vae_prefix_map(config)
    converted = {}
    for key, value in state_dict.items():
        name = _rename(key, entries, "vae")
        if ".mid.attn_1." in name and name.rsplit(".", 2)[-2] in _VAE_ATTENTION_CONV and value.ndim == 2:
            value = value[:, :, None, None]  # linear weight -> 1x1 convolution weight
        converted[name] = value
    return converted


def text_encoder_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIPTextModel state dict as the original checkpoints store it (the HF layout
    under ``text_model.``; transformers >= 5.6 dropped that level in memory)."""
    return {key if key.startswith("text_model.") else f"text_model.{key}": value for key, value in state_dict.items()}


def to_original_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """The whole SD1.5 pipeline (UNet, VAE, text encoder) as one original-layout state dict."""
    if pipe.unet.config.get("addition_embed_type") or getattr(pipe, "text_encoder_2", None) is not None:
        raise InvalidArgument("only SD1.5-family pipelines can be written as a single file", field="model")
    state: dict[str, torch.Tensor] = {}
    for key, value in unet_to_original(pipe.unet.state_dict(), pipe.unet.config).items():
        state[UNET_PREFIX + key] = value
    for key, value in vae_to_original(pipe.vae.state_dict(), pipe.vae.config).items():
        state[VAE_PREFIX + key] = value
    for key, value in text_encoder_to_original(pipe.text_encoder.state_dict()).items():
        state[TEXT_ENCODER_PREFIX + key] = value
    return state


def save_single_file(pipe: StableDiffusionPipeline, path: Path) -> Path:
    """Write ``pipe`` as one original-layout ``.safetensors`` file (tensors made contiguous and
    unshared, as safetensors requires)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {key: value.detach().contiguous().clone() for key, value in to_original_state_dict(pipe).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def write_config_folder(pipe: DiffusionPipeline, folder: Path) -> Path:
    """Write a config-only folder describing ``pipe`` itself (model_index.json, every component's
    config, its tokenizers): the ``config=`` for a single-file checkpoint of a non-standard
    architecture, such as the built-in tiny model."""
    from diffusers import ModelMixin, SchedulerMixin
    from transformers import PreTrainedModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_config(str(folder))
    for name, component in pipe.components.items():
        if component is None:
            continue
        target = folder / name
        if isinstance(component, ModelMixin | SchedulerMixin):
            component.save_config(str(target))
        elif isinstance(component, PreTrainedModel):
            component.config.save_pretrained(str(target))
        elif hasattr(component, "save_pretrained"):  # tokenizers, image processors
            component.save_pretrained(str(target))
    return folder


# -- writing the original layout (for tests and tools: users bring these files) ---------------------
_TO_ORIGINAL = ((".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1."),
                (".norm1.", ".norms.0."), (".norm2.", ".norms.1."), (".norm3.", ".ff_norm."))  # fmt: skip


def _sinusoid(positions: int, dim: int) -> torch.Tensor:
    """AnimateDiff's positional encoding table (1, positions, dim)."""
    position = torch.arange(positions).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, positions, dim)
    table[0, :, 0::2] = torch.sin(position * div)
    table[0, :, 1::2] = torch.cos(position * div)
    return table


def motion_adapter_to_original(adapter: MotionAdapter) -> dict[str, torch.Tensor]:
    """A diffusers MotionAdapter's weights in the original AnimateDiff key layout (what
    ``mm_sd_v15_v2.ckpt`` holds): ``motion_modules.N.temporal_transformer.``, ``attention_blocks``,
    ``norms``, ``ff_norm``, and a ``pos_encoder.pe`` per attention block."""
    state: dict[str, torch.Tensor] = {}
    for key, value in adapter.state_dict().items():
        head, marker, tail = key.partition(".motion_modules.")
        index, _, rest = tail.partition(".")
        if not marker or not rest:
            raise InvalidArgument(
                f"{'motion_adapter'}: unexpected motion adapter parameter {key!r}", field="motion_adapter"
            )
        if rest.endswith("pos_embed.pe"):
            block = rest.removesuffix("pos_embed.pe")
            for attention in (0, 1):
                name = f"{head}.motion_modules.{index}.temporal_transformer.{block}attention_blocks.{attention}"
                state[f"{name}.pos_encoder.pe"] = _sinusoid(value.shape[1], value.shape[2])
            continue
        rest = "." + rest
        for new, old in _TO_ORIGINAL:
            rest = rest.replace(new, old)
        state[f"{head}.motion_modules.{index}.temporal_transformer{rest}"] = value
    return state


def save_motion_adapter_single_file(adapter: MotionAdapter, path: Path) -> Path:
    """Write ``adapter`` as one original-layout file (``.safetensors``, or ``.ckpt`` via torch.save)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().contiguous().clone() for key, value in motion_adapter_to_original(adapter).items()}
    if path.suffix.lower() == ".ckpt":
        torch.save(state, str(path))
    else:
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"format": "pt"})
    return path
