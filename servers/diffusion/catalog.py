"""What a diffusion server can run: catalogs of base models and of motion adapters.

A catalog lists a folder (diffusers folders and single-file checkpoints, scanned on every call so a
file dropped in is usable at once) plus a built-in smoke-test entry, and resolves names; an unknown
name is ``NotFound`` naming the request field and listing what exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from genmesh.errors import NotFound
from servers.diffusion.builtin import TINY_MOTION_ADAPTER, TINY_SD15
from servers.diffusion.detect import INPAINTING_CHANNELS
from servers.diffusion.sources import (
    SINGLE_FILE_SUFFIXES,
    ModelSource,
    SourceKind,
    read_checkpoint_shapes,
)
from storage.pulled import PulledModels, StoredModel

SMOKE_TEST_DESCRIPTION = (
    "smoke-test model: a tiny SD1.5-shaped pipeline with random weights (it draws noise); "
    "put a real checkpoint in the models folder to draw pictures"
)
SMOKE_TEST_ADAPTER_DESCRIPTION = (
    "smoke-test motion adapter: tiny, random weights, fits only the smoke-test model; put "
    "mm_sd_v15_v2.ckpt (or another AnimateDiff v1/v2/v3 SD1.5 module) in the motion adapters folder"
)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    source: ModelSource
    description: str
    smoke_test: bool = False
    stored: StoredModel | None = None  # a pulled model in the object store (fetched on first use)

    @property
    def location(self) -> str:
        """ "store" while only the object store holds it, else "local" (on this server's disk)."""
        return "store" if self.stored is not None and not Path(self.source.location).exists() else "local"

    @property
    def size_bytes(self) -> int:
        path = Path(self.source.location)
        if self.smoke_test or not path.exists():
            return self.stored.size_bytes if self.stored is not None else 0
        if path.is_file():
            return path.stat().st_size
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


@dataclass(frozen=True)
class CatalogKind:
    """What one kind of catalog looks for."""

    field: str  # the request field that names an entry
    what: str  # "model", "motion adapter"
    folder_marker: str  # a diffusers folder of this kind holds this file
    builtin: str
    builtin_description: str
    stored_kind: str  # its kind in the object store's pulled models (storage/pulled.py)


BASE_MODELS = CatalogKind("model", "model", "model_index.json", TINY_SD15, SMOKE_TEST_DESCRIPTION, "image")
MOTION_ADAPTERS = CatalogKind(
    "motion_adapter", "motion adapter", "config.json", TINY_MOTION_ADAPTER, SMOKE_TEST_ADAPTER_DESCRIPTION, "motion"
)


class ModelCatalog:
    def __init__(
        self, models_dir: Path, default: str = "", kind: CatalogKind = BASE_MODELS, pulled: PulledModels | None = None
    ) -> None:
        self.models_dir = models_dir
        self.kind = kind
        self._default = default
        self.pulled = pulled  # clusters: models pulled elsewhere, fetched into models_dir on first use

    def entries(self) -> list[CatalogEntry]:
        found: list[CatalogEntry] = []
        if self.models_dir.is_dir():
            for path in sorted(self.models_dir.iterdir()):
                if path.is_dir() and (path / self.kind.folder_marker).is_file():
                    found.append(CatalogEntry(path.name, ModelSource.parse(str(path)), f"diffusers folder {path.name}"))
                elif path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
                    found.append(CatalogEntry(path.stem, ModelSource.parse(str(path)), f"checkpoint {path.name}"))
        found += self._stored({entry.name for entry in found})
        builtin = self.kind.builtin
        found.append(
            CatalogEntry(
                builtin, ModelSource.parse(f"builtin:{builtin}"), self.kind.builtin_description, smoke_test=True
            )
        )
        return found

    def _stored(self, known: set[str]) -> list[CatalogEntry]:
        if self.pulled is None:
            return []
        entries = []
        for stored in self.pulled.entries(self.kind.stored_kind):
            if stored.name not in known:
                # The family read at pull time: nothing needs the file before it is loaded.
                family = stored.family if self.kind is BASE_MODELS and stored.family else None
                source = ModelSource.parse(str(self.models_dir / stored.file_name), family=family)
                description = f"checkpoint {stored.file_name} (pulled; in the object store until first use)"
                entries.append(CatalogEntry(stored.name, source, description, stored=stored))
        return entries

    def local(self, entry: CatalogEntry) -> CatalogEntry:
        """``entry`` with its file on this server's disk: a stored model is fetched (verified) first."""
        if entry.stored is not None and self.pulled is not None and not Path(entry.source.location).exists():
            self.pulled.fetch(entry.stored, self.models_dir)
        return entry

    @property
    def default_name(self) -> str:
        """The configured default, else the first user entry, else the smoke-test one."""
        return self._default or self.entries()[0].name

    def resolve(self, name: str) -> CatalogEntry:
        wanted = name or self.default_name
        entries = self.entries()
        for entry in entries:
            if entry.name == wanted:
                return entry
        names = ", ".join(entry.name for entry in entries)
        field = self.kind.field
        raise NotFound(f"{field}: unknown {self.kind.what} {wanted!r}; available: {names}", field=field)


def has_inpainting_unet(source: ModelSource) -> bool:
    """Whether a model's UNet takes 9 input channels (an inpainting model), from its folder's UNet
    config or its ``.safetensors`` header; False when that cannot be read cheaply (``.ckpt``, built-in)."""
    path = Path(source.location)
    try:
        if source.kind is SourceKind.DIFFUSERS:
            config = json.loads((path / "unet" / "config.json").read_text())
            return config.get("in_channels") == INPAINTING_CHANNELS
        if source.kind is SourceKind.SINGLE_FILE and path.suffix.lower() == ".safetensors":
            conv_in = read_checkpoint_shapes(path).get("model.diffusion_model.input_blocks.0.0.weight")
            return conv_in is not None and conv_in[1] == INPAINTING_CHANNELS
    except Exception:  # unreadable: the load will say why
        return False
    return False
