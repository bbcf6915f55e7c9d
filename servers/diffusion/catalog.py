"""Which diffusion models the Image service can run: the built-in smoke-test model, and every
diffusers folder or single-file checkpoint in the models folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genmesh.errors import NotFound
from servers.diffusion.builtin import TINY_SD15
from servers.diffusion.loading import SINGLE_FILE_SUFFIXES, ModelSource

SMOKE_TEST_DESCRIPTION = (
    "smoke-test model: a tiny SD1.5-shaped pipeline with random weights (it draws noise); "
    "put a real checkpoint in the models folder to draw pictures"
)


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    source: ModelSource
    description: str
    smoke_test: bool = False

    @property
    def size_bytes(self) -> int:
        path = Path(self.source.location)
        if self.smoke_test or not path.exists():
            return 0
        if path.is_file():
            return path.stat().st_size
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


class ImageCatalog:
    def __init__(self, models_dir: Path, default: str = "") -> None:
        self.models_dir = models_dir
        self._default = default

    def entries(self) -> list[CatalogEntry]:
        found: list[CatalogEntry] = []
        if self.models_dir.is_dir():
            for path in sorted(self.models_dir.iterdir()):
                if path.is_dir() and (path / "model_index.json").is_file():
                    found.append(CatalogEntry(path.name, ModelSource.parse(str(path)), f"diffusers folder {path.name}"))
                elif path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES:
                    found.append(CatalogEntry(path.stem, ModelSource.parse(str(path)), f"checkpoint {path.name}"))
        found.append(
            CatalogEntry(TINY_SD15, ModelSource.parse(f"builtin:{TINY_SD15}"), SMOKE_TEST_DESCRIPTION, smoke_test=True)
        )
        return found

    @property
    def default_name(self) -> str:
        """The configured default, else the first user model, else the smoke-test model."""
        return self._default or self.entries()[0].name

    def resolve(self, name: str) -> CatalogEntry:
        wanted = name or self.default_name
        entries = self.entries()
        for entry in entries:
            if entry.name == wanted:
                return entry
        names = ", ".join(entry.name for entry in entries)
        raise NotFound(f"model: unknown model {wanted!r}; available: {names}", field="model")
