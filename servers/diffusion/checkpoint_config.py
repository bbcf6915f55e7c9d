"""The config folder for a single-file checkpoint, derived from its tensor shapes.

``from_single_file`` needs a diffusers config folder describing the checkpoint's architecture
(``configs.py``). The bundled SD1.5 and motion-module configs describe the public architectures; a
checkpoint of another size (a distilled or scaled-down SD1.5, a smaller motion module) would not
load with them. What the weights' shapes fix is read from the file: block channels and count,
layers per block, which blocks have attention, cross-attention width, input/output and latent
channels, the text encoder's width, depth, MLP width, vocabulary and positions; a motion module's
channels, layers, mid block and positions. What shapes cannot tell (attention heads, norm groups,
the scheduler, the tokenizer) stays as in the bundled config, and a derived size that does not
divide by those is refused naming the field. A standard checkpoint derives exactly the bundled
config, so its folder is the bundled one. SDXL checkpoints keep the bundled config.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genmesh.errors import InvalidArgument
from servers.diffusion.cache import build_once
from servers.diffusion.configs import config_folder
from servers.diffusion.detect import INPAINTING_CHANNELS, PE_KEY, V2_KEY, MotionVersion, Shapes
from servers.diffusion.families import ModelFamily

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TEXT = "cond_stage_model.transformer.text_model."


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """The distinct values of the ``(\\d+)`` in ``pattern`` over every key, sorted."""
    compiled = re.compile(pattern)
    return sorted({int(match[1]) for key in shapes if (match := compiled.match(key))})


def _shape(shapes: Shapes, key: str, where: object, field: str) -> tuple[int, ...]:
    if key not in shapes:
        raise InvalidArgument(f"{field}: {where} lacks {key}; it is not a complete checkpoint", field=field)
    return shapes[key]


def _unet(shapes: Shapes, where: object, field: str) -> dict[str, Any]:
    conv_in = _shape(shapes, f"{UNET}input_blocks.0.0.weight", where, field)
    inputs = _indices(shapes, re.escape(UNET) + r"input_blocks\.(\d+)\.")
    downsamplers = [i for i in inputs if f"{UNET}input_blocks.{i}.0.op.weight" in shapes]
    blocks = len(downsamplers) + 1
    layers, rest = divmod(len(inputs) - 1 - len(downsamplers), blocks)
    if rest or layers < 1:
        raise InvalidArgument(f"{field}: {where} has a UNet layout this server cannot read", field=field)
    channels, down, up = [], [], []
    for block in range(blocks):
        first = 1 + block * (layers + 1)
        channels.append(_shape(shapes, f"{UNET}input_blocks.{first}.0.out_layers.3.weight", where, field)[0])
        down.append(
            "CrossAttnDownBlock2D" if f"{UNET}input_blocks.{first}.1.proj_in.weight" in shapes else "DownBlock2D"
        )
        attends = f"{UNET}output_blocks.{block * (layers + 1)}.1.proj_in.weight" in shapes
        up.append("CrossAttnUpBlock2D" if attends else "UpBlock2D")
    context = {shape[1] for key, shape in shapes.items() if key.startswith(UNET) and key.endswith("attn2.to_k.weight")}
    proj_in = next((shape for key, shape in shapes.items() if key.startswith(UNET) and key.endswith("proj_in.weight")),
                   None)  # fmt: skip
    derived = {
        "in_channels": conv_in[1],
        "out_channels": _shape(shapes, f"{UNET}out.2.weight", where, field)[0],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": down,
        "up_block_types": up,
    }
    if len(context) == 1:
        derived["cross_attention_dim"] = context.pop()
    if proj_in is not None and len(proj_in) == 2:  # SD2-style linear projections (SD1.5 uses 1x1 convolutions)
        derived["use_linear_projection"] = True
    return derived


def _vae(shapes: Shapes, where: object, field: str) -> dict[str, Any]:
    levels = _indices(shapes, re.escape(VAE) + r"encoder\.down\.(\d+)\.")
    layers = _indices(shapes, re.escape(VAE) + r"encoder\.down\.0\.block\.(\d+)\.")
    channels = [_shape(shapes, f"{VAE}encoder.down.{level}.block.0.conv2.weight", where, field)[0] for level in levels]
    return {
        "in_channels": _shape(shapes, f"{VAE}encoder.conv_in.weight", where, field)[1],
        "out_channels": _shape(shapes, f"{VAE}decoder.conv_out.weight", where, field)[0],
        "latent_channels": _shape(shapes, f"{VAE}encoder.conv_out.weight", where, field)[0] // 2,
        "block_out_channels": channels,
        "layers_per_block": len(layers),
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
    }


def _text_encoder(shapes: Shapes, where: object, field: str) -> dict[str, Any]:
    # Older checkpoints store CLIP without the ``text_model.`` level.
    text = TEXT if any(key.startswith(TEXT) for key in shapes) else TEXT.removesuffix("text_model.")
    vocab, width = _shape(shapes, f"{text}embeddings.token_embedding.weight", where, field)
    return {
        "vocab_size": vocab,
        "hidden_size": width,
        "projection_dim": width,
        "max_position_embeddings": _shape(shapes, f"{text}embeddings.position_embedding.weight", where, field)[0],
        "num_hidden_layers": len(_indices(shapes, re.escape(text) + r"encoder\.layers\.(\d+)\.")),
        "intermediate_size": _shape(shapes, f"{text}encoder.layers.0.mlp.fc1.weight", where, field)[0],
    }


def _divides(sizes: list[int], by: int, what: str, where: object, field: str) -> None:
    if by and any(size % by for size in sizes):
        raise InvalidArgument(
            f"{field}: {where} has {what} of {sizes}, which the standard architecture's {by} does not divide; "
            "this server cannot tell its layout from the weights",
            field=field,
        )


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _merged(base: dict[str, Any], derived: Mapping[str, Any]) -> dict[str, Any]:
    return {**base, **derived}


def _derived_folder(base: Path, changes: dict[str, dict[str, Any]], cache_dir: Path, label: str) -> Path:
    """``base`` unless a config in ``changes`` (relative config path -> its derived fields) differs;
    else a cached copy of ``base`` with those configs rewritten."""
    changed = {
        name: fields for name, fields in changes.items() if _merged(_read(base / name), fields) != _read(base / name)
    }
    if not changed:
        return base
    digest = hashlib.sha256(json.dumps([str(base), changed], sort_keys=True).encode()).hexdigest()[:12]

    def fill(tmp: Path) -> None:
        shutil.copytree(base, tmp, dirs_exist_ok=True)
        for name, fields in changed.items():
            (tmp / name).write_text(json.dumps(_merged(_read(base / name), fields), indent=2))

    return build_once(Path(cache_dir) / "configs" / f"{label}-derived-{digest}", fill)


def checkpoint_config_folder(shapes: Shapes, family: ModelFamily, cache_dir: Path, *, where: object,
                             field: str = "model") -> Path:  # fmt: skip
    """The config folder that describes this SD checkpoint (``InvalidArgument`` naming ``field``
    when its layout cannot be read or does not fit the family's heads and norm groups)."""
    if family is not ModelFamily.SD15:
        conv_in = shapes.get(f"{UNET}input_blocks.0.0.weight")
        return config_folder(family, cache_dir, inpainting=conv_in is not None and conv_in[1] == INPAINTING_CHANNELS)
    base = config_folder(family, cache_dir)
    changes: dict[str, dict[str, Any]] = {}
    # A component whose weights the file lacks keeps the bundled config (diffusers says what is missing).
    if any(key.startswith(UNET) for key in shapes):
        unet = _unet(shapes, where, field)
        unet_base = _read(base / "unet" / "config.json")
        _divides(unet["block_out_channels"], unet_base["norm_num_groups"], "UNet channels", where, field)
        _divides(unet["block_out_channels"], unet_base["attention_head_dim"], "UNet channels", where, field)
        changes["unet/config.json"] = unet
    if any(key.startswith(VAE) for key in shapes):
        vae = _vae(shapes, where, field)
        norm_groups = _read(base / "vae" / "config.json")["norm_num_groups"]
        _divides(vae["block_out_channels"], norm_groups, "VAE channels", where, field)
        changes["vae/config.json"] = vae
    if any(key.startswith(TEXT.removesuffix("text_model.")) for key in shapes):
        text = _text_encoder(shapes, where, field)
        heads = _read(base / "text_encoder" / "config.json")["num_attention_heads"]
        _divides([text["hidden_size"]], heads, "a text encoder width", where, field)
        changes["text_encoder/config.json"] = text
    return _derived_folder(base, changes, cache_dir, family.value)


def motion_config_folder(shapes: Shapes, version: MotionVersion, base: Path, cache_dir: Path, *, where: object,
                         field: str = "motion_adapter") -> Path:  # fmt: skip
    """The config folder that describes this original-layout motion module (``base``: its
    version's bundled config)."""
    down = _indices(shapes, r"down_blocks\.(\d+)\.motion_modules\.")
    channels = [
        _shape(shapes, f"down_blocks.{block}.motion_modules.0.temporal_transformer.norm.weight", where, field)[0]
        for block in down
    ]
    mid = _indices(shapes, r"mid_block\.motion_modules\.(\d+)\.")
    derived: dict[str, Any] = {
        "block_out_channels": channels,
        "motion_layers_per_block": len(_indices(shapes, r"down_blocks\.0\.motion_modules\.(\d+)\.")),
        "motion_max_seq_length": shapes[PE_KEY][1],
        "use_motion_mid_block": V2_KEY in shapes,
    }
    if mid:
        derived["motion_mid_block_layers_per_block"] = len(mid)
    config = _read(base / "config.json")
    _divides(channels, config["motion_norm_num_groups"], "block channels", where, field)
    _divides(channels, config["motion_num_attention_heads"], "block channels", where, field)
    return _derived_folder(base, {"config.json": derived}, cache_dir, f"motion-{version.value}")
