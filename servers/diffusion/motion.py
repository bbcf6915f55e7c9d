"""AnimateDiff motion adapters: where they come from, loading them offline, fitting them to a base
model.

Users download motion modules as single files in the original AnimateDiff layout
(``mm_sd_v15_v2.ckpt``, ``v3_sd15_mm.ckpt``) or as diffusers ``MotionAdapter`` folders. A single
file holds weights only; its architecture comes from a bundled config (``configs/motion_adapter/
v1|v2|v3``), chosen from the file's keys as diffusers itself tells the versions apart: v2 has a
motion mid block, v1 has 24 positions instead of 32, v3 has neither; what the weights' shapes fix
(channels, layers) is read from the file (``checkpoint_config``). ``from_single_file`` always
gets ``config=``, so the hub is never reached. The built-in tiny adapter (``builtin:``) matches the
built-in tiny SD1.5. (The reverse, writing an adapter in the original layout, is test tooling:
``tests/support/single_file.py``.)

An adapter fits a base model when their UNet channel layouts match; an SDXL base (or any other
mismatch) is ``InvalidArgument`` naming ``motion_adapter``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from genmesh.errors import InvalidArgument, NotFound
from servers.diffusion.builtin import TINY_MOTION_ADAPTER, tiny_motion_adapter_folder
from servers.diffusion.checkpoint_config import motion_config_folder
from servers.diffusion.configs import CONFIGS_DIR
from servers.diffusion.detect import MotionVersion, motion_version_from_shapes
from servers.diffusion.sources import ModelSource, SourceKind, read_checkpoint_shapes

if TYPE_CHECKING:
    from diffusers import MotionAdapter

FIELD = "motion_adapter"
MOTION_CONFIGS_DIR = CONFIGS_DIR / "motion_adapter"


def motion_config_dir(version: MotionVersion | str) -> Path:
    return MOTION_CONFIGS_DIR / MotionVersion(version).value


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        return read_checkpoint_shapes(Path(path))
    except Exception as exc:
        raise InvalidArgument(f"{FIELD}: {path} is not a readable checkpoint ({exc})", field=FIELD) from None


def detect_motion_version(path: Path) -> MotionVersion:
    """v1, v2 or v3 from an original-layout motion module's keys (``detect.motion_version_from_shapes``);
    ``InvalidArgument`` for anything else (an SD1.5 checkpoint, an SDXL motion module, a damaged file)."""
    return motion_version_from_shapes(_shapes(path), path, FIELD)


def single_file_config(path: Path, cache_dir: Path) -> Path:
    """The config folder of an original-layout motion module: its version's bundled config, with
    what its shapes fix (channels, layers, positions) read from the file (``checkpoint_config``)."""
    shapes = _shapes(path)
    version = motion_version_from_shapes(shapes, path, FIELD)
    return motion_config_folder(shapes, version, motion_config_dir(version), cache_dir, where=Path(path).name)


def load_motion_adapter(source: ModelSource, *, cache_dir: Path, dtype: torch.dtype) -> MotionAdapter:
    """Load ``source`` (built-in, diffusers folder or single file) offline, on the CPU."""
    from diffusers import MotionAdapter

    if source.kind is SourceKind.BUILTIN:
        if source.location != TINY_MOTION_ADAPTER:
            raise NotFound(f"{FIELD}: unknown built-in motion adapter {source.location!r}", field=FIELD)
        folder = tiny_motion_adapter_folder(Path(cache_dir))
        return MotionAdapter.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    path = Path(source.location).expanduser()
    if not path.exists():
        raise NotFound(f"{FIELD}: no motion adapter at {source.location}", field=FIELD)
    if source.kind is SourceKind.SINGLE_FILE:
        config = source.config_dir or single_file_config(path, Path(cache_dir))
        return MotionAdapter.from_single_file(str(path), config=str(config), dtype=dtype, local_files_only=True)
    if not (path / "config.json").is_file():
        raise InvalidArgument(f"{FIELD}: {path} is not a MotionAdapter folder (no config.json)", field=FIELD)
    return MotionAdapter.from_pretrained(str(path), dtype=dtype, local_files_only=True)


def check_fits(adapter: MotionAdapter, unet_config: Any, *, adapter_name: str, model_name: str) -> None:
    """``InvalidArgument`` naming ``motion_adapter`` unless the adapter's blocks match the UNet's."""
    adapter_channels = tuple(adapter.config.block_out_channels)
    unet_channels = tuple(unet_config.block_out_channels)
    if adapter_channels != unet_channels or unet_config.get("addition_embed_type"):
        raise InvalidArgument(
            f"{FIELD}: {adapter_name!r} does not fit model {model_name!r}: the adapter's blocks have "
            f"{list(adapter_channels)} channels, the model's UNet {list(unet_channels)} (SD1.5 motion adapters "
            "need an SD1.5-family model)",
            field=FIELD,
        )


def animatediff_scheduler_config(base: dict[str, Any]) -> dict[str, Any]:
    """A base model's scheduler config as AnimateDiff needs it: linear betas, no sample clipping,
    evenly spaced timesteps (the settings the motion modules were trained with)."""
    return {
        **dict(base),
        "beta_schedule": "linear",
        "clip_sample": False,
        "timestep_spacing": "linspace",
        "steps_offset": 1,
    }
