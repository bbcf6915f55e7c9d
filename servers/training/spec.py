"""What a training job trains: the spec with every default resolved, and its validation."""

from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass
from typing import Any

from genmesh.errors import InvalidArgument, require, require_range

ARCHITECTURES = ("tiny", "small", "base")
MAX_PREFIX_CHARS = 256
_PREFIX = re.compile(r"[A-Za-z0-9._-]*")


@dataclass(frozen=True)
class TrainingSpec:
    """A TrainingJobSpec with defaults resolved (see training.proto for units and ranges)."""

    layer: int
    dataset_prefix: str = ""
    num_epochs: int = 10
    batch_size: int = 4
    learning_rate: float = 3e-4
    max_pairs: int | None = None
    patch_size: int = 128
    validation_split: float = 0.2
    seed: int = 0
    architecture: str = "base"
    description: str = ""

    def validate(self) -> TrainingSpec:
        require_range(self.layer, "layer", 1, 99)
        validate_dataset_prefix(self.dataset_prefix, "dataset_prefix")
        require_range(self.num_epochs, "num_epochs", 1, 10_000)
        require_range(self.batch_size, "batch_size", 1, 256)
        require(0 < self.learning_rate <= 1, "learning_rate", f"must be in (0, 1] (got {self.learning_rate})")
        if self.max_pairs is not None:
            require_range(self.max_pairs, "max_pairs", 2, 1_000_000)
        require_range(self.patch_size, "patch_size", 16, 1024)
        require(self.patch_size % 8 == 0, "patch_size", f"must be a multiple of 8 (got {self.patch_size})")
        require_range(self.validation_split, "validation_split", 0.05, 0.5)
        require_range(self.seed, "seed", 0, 2**32 - 1)
        require(
            self.architecture in ARCHITECTURES,
            "architecture",
            f"must be one of {', '.join(ARCHITECTURES)} (got {self.architecture!r})",
        )
        require(len(self.description) <= 1000, "description", "at most 1000 characters")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingSpec:
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def validate_dataset_prefix(prefix: str, field: str) -> str:
    """A pair-name prefix: up to 256 of [A-Za-z0-9._-] (never a path)."""
    require(len(prefix) <= MAX_PREFIX_CHARS, field, f"at most {MAX_PREFIX_CHARS} characters")
    require(bool(_PREFIX.fullmatch(prefix)), field, "only letters, digits, '.', '_' and '-' (a pair name prefix)")
    return prefix


def random_seed() -> int:
    return secrets.randbits(32)


def resume_spec(previous: TrainingSpec, requested: dict[str, Any]) -> TrainingSpec:
    """The spec of a job that continues ``previous``: the same, except ``num_epochs`` may grow."""
    for name, value in requested.items():
        if name == "num_epochs":
            continue
        if getattr(previous, name) != value:
            raise InvalidArgument(
                f"spec.{name}: a resumed job keeps the original job's {name} ({getattr(previous, name)!r}); "
                "only num_epochs may change",
                field=f"spec.{name}",
            )
    epochs = requested.get("num_epochs", previous.num_epochs)
    require(epochs >= previous.num_epochs, "spec.num_epochs", f"must be at least the original {previous.num_epochs}")
    return dataclasses.replace(previous, num_epochs=epochs).validate()
