"""Where a model comes from (:class:`ModelSource`) and what a checkpoint holds, read from its keys
and tensor shapes without loading it (the family of a single file or a diffusers folder; the motion
module's version lives in ``motion``).

Three kinds of source: a diffusers folder (``model_index.json`` + component folders), a single
original-layout checkpoint (``.safetensors``, or a ``.ckpt`` read with ``weights_only``) of family
``sd15`` or ``sdxl`` (detected from its keys and tensor shapes when not given), and a built-in model
(``builtin:tiny-sd15``) made locally on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from genmesh.errors import InvalidArgument
from servers.diffusion.detect import family_from_pipeline_class, family_from_shapes, safetensors_shapes
from servers.diffusion.families import ModelFamily

BUILTIN_PREFIX = "builtin:"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
FIELD = "model"


class SourceKind(StrEnum):
    DIFFUSERS = "diffusers"
    SINGLE_FILE = "single_file"
    BUILTIN = "builtin"


@dataclass(frozen=True)
class ModelSource:
    """A model's origin. ``family`` None means detect it; ``config_dir`` (single files only) is the
    config-only folder describing the checkpoint's architecture, by default the family's bundled one."""

    kind: SourceKind
    location: str  # a folder or file path, or a built-in model's name
    family: ModelFamily | None = None
    config_dir: Path | None = None

    @classmethod
    def parse(
        cls, spec: str, *, family: ModelFamily | str | None = None, config_dir: Path | None = None
    ) -> ModelSource:
        """``builtin:NAME``, a ``.safetensors``/``.ckpt`` file, or a diffusers folder."""
        family = ModelFamily(family) if family else None
        if spec.startswith(BUILTIN_PREFIX):
            return cls(SourceKind.BUILTIN, spec[len(BUILTIN_PREFIX) :], family=ModelFamily.SD15)
        if spec.lower().endswith(SINGLE_FILE_SUFFIXES):
            return cls(SourceKind.SINGLE_FILE, spec, family=family, config_dir=config_dir)
        return cls(SourceKind.DIFFUSERS, spec, family=family)

    def __str__(self) -> str:
        return f"{BUILTIN_PREFIX}{self.location}" if self.kind is SourceKind.BUILTIN else self.location


def read_checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a checkpoint, without reading the tensors when possible."""
    if path.suffix.lower() == ".safetensors":
        return safetensors_shapes(path)
    try:
        state: Any = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # the legacy (pre-zipfile) format cannot be memory-mapped
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    while isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}


def detect_single_file_family(path: Path) -> ModelFamily:
    """``sd15`` or ``sdxl`` from a checkpoint's keys and shapes (``detect.family_from_shapes``);
    ``InvalidArgument`` for other models and unreadable files."""
    try:
        shapes = read_checkpoint_shapes(Path(path))
    except Exception as exc:
        raise InvalidArgument(f"{FIELD}: {path} is not a readable checkpoint ({exc})", field=FIELD) from None
    return family_from_shapes(shapes, path, FIELD)


def detect_folder_family(path: Path) -> ModelFamily:
    """``sd15`` or ``sdxl`` from a diffusers folder's ``model_index.json``."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise InvalidArgument(f"{FIELD}: {path} is not a diffusers folder (no model_index.json)", field=FIELD)
    return family_from_pipeline_class(json.loads(index.read_text()).get("_class_name", ""), path, FIELD)
