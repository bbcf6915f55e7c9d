"""Plain-dataclass inputs of a training report (no protobuf: the servicer converts its messages).

Units follow ``genmesh.training.v1``: PSNR in dB, SSIM in [-1, 1], accuracy a share in [0, 1] (the
share of pixels within 0.02 of the clean image on every channel), losses are L1 on pixels in
[0, 1], times in seconds, datetimes timezone-aware (naive ones are taken as UTC).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["succeeded", "cancelled", "failed"]
STATUSES: tuple[str, ...] = ("succeeded", "cancelled", "failed")


@dataclass(frozen=True)
class Quality:
    """Image quality against the clean reference (``QualityMetrics``)."""

    psnr: float
    ssim: float
    accuracy: float

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Quality:
        return cls(
            psnr=float(data.get("psnr", 0.0)),
            ssim=float(data.get("ssim", 0.0)),
            accuracy=float(data.get("accuracy", 0.0)),
        )

    def to_dict(self) -> dict[str, float]:
        return {"psnr": self.psnr, "ssim": self.ssim, "accuracy": self.accuracy}

    def minus(self, other: Quality) -> Quality:
        """``self - other`` per metric (positive = self is better)."""
        return Quality(self.psnr - other.psnr, self.ssim - other.ssim, self.accuracy - other.accuracy)


@dataclass(frozen=True)
class EpochRecord:
    """Metrics at the end of one epoch (``EpochMetrics``)."""

    epoch: int
    train_loss: float
    validation_loss: float
    validation: Quality
    baseline: Quality
    learning_rate: float
    epoch_seconds: float

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EpochRecord:
        """From ``{"validation": {"psnr": ..}, "baseline": {..}, ..}`` or a flat form:
        ``{"validation_psnr": .., "baseline_ssim": .., ..}`` or ``{"psnr": .., "baseline_psnr": .., ..}``
        (the validation metrics unprefixed, as in ``servers.training.records.EpochRecord``)."""

        def quality(prefix: str) -> Quality:
            nested = data.get(prefix)
            if isinstance(nested, Mapping):
                return Quality.from_mapping(nested)

            def get(name: str) -> float:
                for key in (f"{prefix}_{name}", name if prefix == "validation" else None):
                    if key is not None and key in data:
                        return float(data[key])
                return math.nan

            return Quality(psnr=get("psnr"), ssim=get("ssim"), accuracy=get("accuracy"))

        return cls(
            epoch=int(data["epoch"]),
            train_loss=float(data.get("train_loss", math.nan)),
            validation_loss=float(data.get("validation_loss", math.nan)),
            validation=quality("validation"),
            baseline=quality("baseline"),
            learning_rate=float(data.get("learning_rate", 0.0)),
            epoch_seconds=float(data.get("epoch_seconds", 0.0)),
        )


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
    history: list[EpochRecord]  # or mappings / dataclasses with the same fields (converted)
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
        history = [_epoch_record(h) for h in self.history]
        history.sort(key=lambda h: h.epoch)
        object.__setattr__(self, "history", history)
        if self.best_epoch is not None and all(h.epoch != self.best_epoch for h in history):
            raise ValueError(f"best_epoch {self.best_epoch} is not in the history")

    def best_record(self) -> EpochRecord | None:
        """The best epoch's record: ``best_epoch``, else the highest validation PSNR (earliest on ties)."""
        if not self.history:
            return None
        if self.best_epoch is not None:
            return next(h for h in self.history if h.epoch == self.best_epoch)
        best = self.history[0]
        for record in self.history[1:]:
            if _finite(record.validation.psnr) and (
                not _finite(best.validation.psnr) or record.validation.psnr > best.validation.psnr
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


def _epoch_record(item: Any) -> EpochRecord:
    """An ``EpochRecord`` from itself, a mapping, or any dataclass with the same field names."""
    if isinstance(item, EpochRecord):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return EpochRecord.from_mapping(dataclasses.asdict(item))
    if isinstance(item, Mapping):
        return EpochRecord.from_mapping(item)
    raise TypeError(f"history items must be EpochRecord, mappings or dataclasses (got {type(item).__name__})")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
