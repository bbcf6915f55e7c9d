"""Training jobs as records persisted in object storage, so they survive a server restart.

Each job is one JSON object, ``training-outputs/jobs/<job_id>.json``, rewritten whole (never
half-written) at creation, start, every epoch and the end. A restarted server reads them back,
answers Get/List/Watch for finished jobs, and resumes the interrupted ones from their checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from genmesh.errors import NotFound
from servers.training.spec import TrainingSpec
from storage.buckets import TRAINING_OUTPUTS
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

JOBS_PREFIX = "jobs/"
ACTIVE_STATES = ("queued", "running")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    validation_loss: float
    psnr: float
    ssim: float
    accuracy: float
    baseline_psnr: float
    baseline_ssim: float
    baseline_accuracy: float
    learning_rate: float
    epoch_seconds: float
    end_time: float


@dataclass
class TrainingRecord:
    job_id: str
    spec: TrainingSpec
    state: str = "queued"  # queued | running | succeeded | failed | cancelled
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    stage: str = ""
    current_epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    checkpoint_key: str = ""
    checkpoint_sha256: str = ""
    checkpoint_size: int = 0
    model_id: str = ""
    resumed_count: int = 0
    resumed_from_job_id: str = ""
    dataset: dict[str, int] = field(default_factory=dict)
    # The pairs chosen when the job first ran: a resumed job trains on exactly these, even if the
    # prefix matches other files by then.
    pair_names: list[str] = field(default_factory=list)
    error_code: str = ""
    error_message: str = ""
    cancel_reason: str = ""
    device: str = ""
    interrupted_reason: str = ""  # why it stopped last time it was running (for a Resumed event)

    @property
    def best(self) -> EpochRecord | None:
        return next((item for item in self.history if item.epoch == self.best_epoch), None)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["spec"] = self.spec.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRecord:
        data = dict(data)
        data["spec"] = TrainingSpec.from_dict(data["spec"])
        data["history"] = [EpochRecord(**item) for item in data.get("history", [])]
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


class JobRecords:
    """Load and save training records in the ``training-outputs`` bucket."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def key(job_id: str) -> str:
        return f"{JOBS_PREFIX}{validate_job_id(job_id)}.json"

    def save(self, record: TrainingRecord) -> None:
        data = json.dumps(record.to_dict(), indent=1).encode()
        self.store.put_bytes(TRAINING_OUTPUTS, self.key(record.job_id), data, "application/json")

    def load(self, job_id: str) -> TrainingRecord:
        try:
            return TrainingRecord.from_dict(json.loads(self.store.get_bytes(TRAINING_OUTPUTS, self.key(job_id))))
        except NotFound:
            raise NotFound(f"training job {job_id!r} not found") from None

    def all(self) -> list[TrainingRecord]:
        records = []
        for entry in self.store.list(TRAINING_OUTPUTS, JOBS_PREFIX):
            if not entry.key.endswith(".json"):
                continue
            try:
                records.append(TrainingRecord.from_dict(json.loads(self.store.get_bytes(TRAINING_OUTPUTS, entry.key))))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("training_record_unreadable", key=entry.key, error=str(exc))
        return sorted(records, key=lambda record: record.created_at, reverse=True)
