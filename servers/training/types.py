"""The Training service's concepts, each defined once: what every layer (api, jobs, tasks, data,
model, reports, registry) passes around. Plain dataclasses: no grpc, no torch, no storage I/O.

- ``Quality``: one ``QualityMetrics`` (PSNR, SSIM, accuracy).
- ``EpochMetrics``: one epoch's ``EpochMetrics``: what the trainer produces, the job record
  persists, Watch streams and the report shows.
- ``DatasetStats``: the pairs a job found and used (``DatasetStats``).
- ``TrainingSpec``: a ``TrainingJobSpec`` with every default resolved, and its one validation
  (``check_recipe`` holds the ranges the engine's ``TrainConfig`` shares).
- The events a training job emits besides the runtime's ``StageChanged``: ``Resumed``,
  ``EpochCompleted``, ``CheckpointSaved``; and ``EpochProgress``, where a running job is inside
  its epoch (``TrainingProgress``).

The architecture presets are one table, ``servers.training.model.restormer.ARCHITECTURES``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genmesh.errors import InvalidArgument, require, require_range
from servers.runtime.events import Payload

DEFAULT_ARCHITECTURE = "base"


def default_architecture(device: str) -> str:
    """The preset a job gets when it names none: ``base`` (26 M parameters) on a GPU, ``small``
    (1.2 M) on the CPU, where ``base`` takes tens of minutes for even a small job."""
    return DEFAULT_ARCHITECTURE if device.startswith("cuda") else "small"


MAX_SEED = 2**32 - 1
MAX_PREFIX_CHARS = 256
_PREFIX = re.compile(r"[A-Za-z0-9._-]*")


def finite(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (metrics of a diverged job are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- metrics ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quality:
    """Image quality against the clean reference (``QualityMetrics``): PSNR in dB, SSIM in
    [-1, 1], accuracy a share in [0, 1]."""

    psnr: float
    ssim: float
    accuracy: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Quality:
        """From ``{"psnr", "ssim", "accuracy"}``; a missing metric is NaN."""
        return cls(*(float(data.get(name, math.nan)) for name in ("psnr", "ssim", "accuracy")))

    def to_dict(self) -> dict[str, float]:
        return {"psnr": self.psnr, "ssim": self.ssim, "accuracy": self.accuracy}

    def minus(self, other: Quality) -> Quality:
        """``self - other`` per metric (positive = self is better)."""
        return Quality(self.psnr - other.psnr, self.ssim - other.ssim, self.accuracy - other.accuracy)

    __sub__ = minus


@dataclass(frozen=True)
class EpochMetrics:
    """Metrics at the end of one epoch (``EpochMetrics``). ``end_time`` is Unix seconds;
    ``global_step`` the optimizer steps done over the job by then; ``best`` whether it had the
    highest validation PSNR so far when it ended (its weights are the ones registered)."""

    epoch: int
    train_loss: float
    validation_loss: float
    validation: Quality
    baseline: Quality
    learning_rate: float
    epoch_seconds: float
    end_time: float = 0.0
    global_step: int = 0
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["validation"], data["baseline"] = self.validation.to_dict(), self.baseline.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochMetrics:
        """From ``to_dict``'s form, the one shape checkpoints store (older stored shapes are
        upgraded where they are read: ``servers.training.legacy``). A missing quality metric is NaN."""
        return cls(
            epoch=int(data["epoch"]),
            train_loss=float(data["train_loss"]),
            validation_loss=float(data["validation_loss"]),
            validation=Quality.from_dict(data["validation"]),
            baseline=Quality.from_dict(data["baseline"]),
            learning_rate=float(data["learning_rate"]),
            epoch_seconds=float(data["epoch_seconds"]),
            end_time=float(data.get("end_time", 0.0)),
            global_step=int(data.get("global_step", 0)),
            best=bool(data.get("best", False)),
        )


@dataclass(frozen=True)
class DatasetStats:
    """The pairs a job found and used (``DatasetStats``)."""

    clean_files: int = 0
    degraded_files: int = 0
    pairs_found: int = 0
    pairs_used: int = 0
    skipped_pairs: int = 0
    train_pairs: int = 0
    validation_pairs: int = 0

    def effectiveness(self) -> float | None:
        """Data effectiveness: pairs used / clean files (pairs found when no clean file was
        counted), as a share in [0, 1]; None when both are 0."""
        denominator = self.clean_files or self.pairs_found
        if denominator <= 0:
            return None
        return self.pairs_used / denominator

    def effectiveness_denominator(self) -> tuple[str, int]:
        if self.clean_files:
            return "clean files", self.clean_files
        return "complete pairs found", self.pairs_found


# -- the spec --------------------------------------------------------------------------------------


def check_recipe(
    *, epochs: int, batch_size: int, learning_rate: float, patch_size: int, seed: int, architecture: str,
    epochs_field: str = "num_epochs",
) -> None:  # fmt: skip
    """The ranges of a training recipe, for ``TrainingSpec`` and the engine's ``TrainConfig``
    (which calls its epochs field "epochs"). InvalidArgument naming the field."""
    from servers.training.model.restormer import architecture_config  # the presets table (torch)

    require_range(epochs, epochs_field, 1, 10_000)
    require_range(batch_size, "batch_size", 1, 256)
    require(0 < learning_rate <= 1, "learning_rate", f"must be in (0, 1] (got {learning_rate})")
    require_range(patch_size, "patch_size", 16, 1024)
    require(patch_size % 8 == 0, "patch_size", f"must be a multiple of 8 (got {patch_size})")
    require_range(seed, "seed", 0, MAX_SEED)
    architecture_config(architecture)


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
    architecture: str = DEFAULT_ARCHITECTURE
    description: str = ""

    def validate(self) -> TrainingSpec:
        require_range(self.layer, "layer", 1, 99)
        validate_dataset_prefix(self.dataset_prefix, "dataset_prefix")
        check_recipe(
            epochs=self.num_epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            patch_size=self.patch_size, seed=self.seed, architecture=self.architecture,
        )  # fmt: skip
        if self.max_pairs is not None:
            require_range(self.max_pairs, "max_pairs", 2, 1_000_000)
        require_range(self.validation_split, "validation_split", 0.05, 0.5)
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


# -- what a training job emits (payloads of ``servers.runtime.events.Output``) ------------------------


@dataclass(frozen=True)
class Resumed(Payload):
    """The job continues from its checkpoint after an interruption (``Resumed``)."""

    resumed_count: int
    from_epoch: int
    reason: str


@dataclass(frozen=True)
class EpochCompleted(Payload):
    metrics: EpochMetrics


@dataclass(frozen=True)
class CheckpointSaved(Payload):
    """A checkpoint was written after ``epoch``; ``stored`` is a ``storage.object_store.StoredObject``."""

    epoch: int
    stored: Any
    best: bool


@dataclass(frozen=True)
class EpochProgress:
    """Where a running job is inside its epoch (``TrainingProgress``): ``step`` of ``steps``
    optimizer steps while ``stage`` is "training", validation images while "validating";
    ``loss`` the epoch's mean training loss so far."""

    stage: str
    epoch: int
    step: int
    steps: int
    loss: float
