"""Plain-dataclass inputs of a training report (no protobuf). The shared concepts (``Quality``,
``EpochMetrics``, ``DatasetStats``) are ``servers.training.types``; these are the report's own.

Units follow ``genmesh.training.v1``: PSNR in dB, SSIM in [-1, 1], accuracy a share in [0, 1] (the
share of pixels within 0.02 of the clean image on every channel), losses are L1 on pixels in
[0, 1], times in seconds, datetimes timezone-aware (naive ones are taken as UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from servers.training.types import DatasetStats, EpochMetrics, Quality, finite

Status = Literal["succeeded", "cancelled", "failed"]
STATUSES: tuple[str, ...] = ("succeeded", "cancelled", "failed")


@dataclass(frozen=True)
class Timings:
    """When the job was created, first started and ended: datetimes, or Unix times in seconds
    (as ``time.time()`` gives). ``total_seconds`` is the running time (default: ``ended - started``);
    queueing is reported apart."""

    created: datetime | float | None = None
    started: datetime | float | None = None
    ended: datetime | float | None = None
    total_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("created", "started", "ended"):
            object.__setattr__(self, name, as_utc(getattr(self, name)))


@dataclass(frozen=True)
class ModelInfo:
    """The trained model. ``model_id``/``key`` are empty when no model was registered (a cancelled
    or failed job); ``size_bytes`` is then the checkpoint's weights size if known, else 0."""

    architecture: str
    parameter_count: int
    size_bytes: int = 0
    model_id: str = ""
    key: str = ""
    bucket: str = "models"


@dataclass(frozen=True)
class PreviousModel:
    """The newest earlier model of the same layer (``RegisteredModelInfo.as_previous()``)."""

    model_id: str
    metrics: Quality
    validation_loss: float | None = None
    job_id: str = ""
    key: str = ""
    created: datetime | None = None


@dataclass(frozen=True)
class Environment:
    """Where the job ran. ``device`` like "cuda:0", "cpu"; ``peak_memory_bytes`` is the device's
    peak allocated memory (host RSS on CPU), 0 if unknown."""

    python: str = ""
    torch: str = ""
    device: str = ""
    device_name: str = ""
    peak_memory_bytes: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def accelerated(self) -> bool:
        return self.device.split(":", 1)[0] in ("cuda", "rocm", "hip", "mps", "xpu")


@dataclass(frozen=True)
class ReportInput:
    """Everything a training report is built from.

    ``spec`` holds the resolved ``TrainingJobSpec`` fields by their proto names: num_epochs,
    batch_size, learning_rate, patch_size, validation_split, seed, architecture, max_pairs,
    dataset_prefix (``json_format.MessageToDict(spec, preserving_proto_field_name=True)`` fits;
    int64 values given as strings and "ARCHITECTURE_BASE"-style names are accepted). Unknown keys
    are reported too, after the known ones.

    ``best_epoch`` is the epoch whose weights were kept (highest validation PSNR); None computes
    it from ``history``. ``generated_at`` is the report's time (default: ``timings.ended``).
    """

    job_id: str
    layer: int
    status: Status
    spec: Mapping[str, Any]
    history: list[EpochMetrics]  # in any order (sorted by epoch)
    dataset: DatasetStats = field(default_factory=DatasetStats)
    timings: Timings = field(default_factory=Timings)
    description: str = ""
    best_epoch: int | None = None
    model: ModelInfo | None = None
    previous: PreviousModel | None = None
    environment: Environment = field(default_factory=Environment)
    resumed_count: int = 0
    resumed_from_job_id: str = ""
    error_message: str = ""
    generated_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} (got {self.status!r})")
        history = sorted(self.history, key=lambda h: h.epoch)
        object.__setattr__(self, "history", history)
        if self.best_epoch is not None and all(h.epoch != self.best_epoch for h in history):
            raise ValueError(f"best_epoch {self.best_epoch} is not in the history")

    def best_record(self) -> EpochMetrics | None:
        """The best epoch's record: ``best_epoch``, else the highest validation PSNR (earliest on ties)."""
        if not self.history:
            return None
        if self.best_epoch is not None:
            return next(h for h in self.history if h.epoch == self.best_epoch)
        best = self.history[0]
        for record in self.history[1:]:
            if finite(record.validation.psnr) and (
                not finite(best.validation.psnr) or record.validation.psnr > best.validation.psnr
            ):
                best = record
        return best

    def planned_epochs(self) -> int | None:
        value = self.spec.get("num_epochs")
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None


def as_utc(value: datetime | float | None) -> datetime | None:
    """A UTC datetime from a datetime (naive = UTC) or a Unix time in seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)
