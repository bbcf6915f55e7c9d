"""What a checkpoint is, from its tensor names and shapes: the family of an SD checkpoint (``sd15``
or ``sdxl``; of a diffusers folder, from its pipeline class) and the version of an AnimateDiff
motion module. Torch-free, so the models server
(which never loads a model) classifies a pulled file with the same rules the loaders use.

Shapes come from a ``.safetensors`` header (read here, without the tensors) or, for a pickled
``.ckpt``, from ``sources.read_checkpoint_shapes`` (torch, ``weights_only``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from genmesh.errors import InvalidArgument
from servers.diffusion.families import ModelFamily

Shapes = Mapping[str, tuple[int, ...]]
INPAINTING_CHANNELS = 9  # an inpainting UNet's input: 4 latent + 1 mask + 4 masked-image latent channels
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header
# diffusers' own markers for telling the AnimateDiff versions apart (loaders.single_file_utils).
PE_KEY = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
V2_KEY = "mid_block.motion_modules.0.temporal_transformer.norm.bias"
SDXL_MOTION_KEY = "up_blocks.2.motion_modules.0.temporal_transformer.norm.weight"


class MotionVersion(StrEnum):
    V1 = "v1"
    V2 = "v2"
    V3 = "v3"


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape from a ``.safetensors`` file's header (8-byte little-endian length,
    then JSON); ``ValueError`` when the file is not one."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if not 2 <= length <= MAX_SAFETENSORS_HEADER:
            raise ValueError(f"a safetensors header of {length} bytes is impossible")
        header = json.loads(handle.read(length))
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    return {key: tuple(value["shape"]) for key, value in header.items() if key != "__metadata__"}


def family_from_shapes(shapes: Shapes, where: object, field: str = "model") -> ModelFamily:
    """``sd15`` or ``sdxl`` from a checkpoint's keys (text encoder layout), checked against the
    UNet's cross-attention width (inpainting variants too); ``InvalidArgument`` naming ``field`` for
    other models (SD2, SDXL refiner, edit models)."""
    keys = shapes.keys()
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and conv_in[1] not in (4, INPAINTING_CHANNELS):
        raise InvalidArgument(f"{field}: {where} has {conv_in[1]} UNet input channels (an edit model?)", field=field)
    context = {shape[1] for key, shape in shapes.items() if key.endswith("attn2.to_k.weight") and len(shape) == 2}
    if any(key.startswith("conditioner.embedders.1.") for key in keys) or context == {2048}:
        return ModelFamily.SDXL
    if any(key.startswith("cond_stage_model.transformer.") for key in keys) or context == {768}:
        return ModelFamily.SD15
    if any(key.startswith("cond_stage_model.model.") for key in keys) or context == {1024}:
        raise InvalidArgument(f"{field}: {where} looks like Stable Diffusion 2.x, which is not supported", field=field)
    raise InvalidArgument(f"{field}: {where} is not an SD1.5 or SDXL checkpoint", field=field)


def family_from_pipeline_class(class_name: str, where: object, field: str = "model") -> ModelFamily:
    """``sd15`` or ``sdxl`` from a diffusers folder's pipeline class (``model_index.json``'s
    ``_class_name``); ``InvalidArgument`` naming ``field`` for other pipelines."""
    if class_name.startswith("StableDiffusionXL"):
        return ModelFamily.SDXL
    if class_name.startswith("StableDiffusion") and "3" not in class_name and "Upscale" not in class_name:
        return ModelFamily.SD15
    raise InvalidArgument(
        f"{field}: {where} holds a {class_name or 'unknown'} pipeline, not SD1.5 or SDXL", field=field
    )


def is_motion_module(shapes: Shapes) -> bool:
    return PE_KEY in shapes


def motion_version_from_shapes(shapes: Shapes, where: object, field: str = "motion_adapter") -> MotionVersion:
    """v1, v2 or v3 from an original-layout motion module's keys; ``InvalidArgument`` naming ``field``
    for anything else (an SD1.5 checkpoint, an SDXL motion module)."""
    if PE_KEY not in shapes:
        raise InvalidArgument(f"{field}: {where} is not an AnimateDiff motion module", field=field)
    if SDXL_MOTION_KEY in shapes and shapes[SDXL_MOTION_KEY][-1] == 320:
        raise InvalidArgument(f"{field}: {where} is an SDXL motion module; this server runs SD1.5 ones", field=field)
    if V2_KEY in shapes:
        return MotionVersion.V2
    return MotionVersion.V1 if shapes[PE_KEY][1] == 24 else MotionVersion.V3
