"""Training jobs as records persisted in object storage, so they survive a server restart.

Each job is one JSON object, ``training-outputs/jobs/<job_id>.json``, rewritten whole (never
half-written) at creation, start, every epoch and the end. A restarted server reads them back,
answers Get/List/Watch for finished jobs, and resumes the interrupted ones from their checkpoints.
``state`` is a ``JobState`` stored as its value ("queued", "running", ...); ``history`` holds
``EpochMetrics`` (records written before it existed, with flat "psnr"/"baseline_psnr" keys, load too).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from genmesh.errors import NotFound
from servers.runtime.events import JobState
from servers.training.types import EpochMetrics, EpochProgress, TrainingSpec
from storage.buckets import TRAINING_OUTPUTS
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

JOBS_PREFIX = "jobs/"


@dataclass
class TrainingRecord:
    job_id: str
    spec: TrainingSpec
    state: JobState = JobState.QUEUED  # stored as its string value, e.g. "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    stage: str = ""
    current_epoch: int = 0
    history: list[EpochMetrics] = field(default_factory=list)
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
    client_id: str = ""  # its owner: the client id of the key that created it ("" without the gateway)
    # Where the job is inside its epoch while this process runs it (never persisted).
    live: EpochProgress | None = None

    @property
    def best(self) -> EpochMetrics | None:
        return next((item for item in self.history if item.epoch == self.best_epoch), None)

    @property
    def active(self) -> bool:
        return not self.state.terminal

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("live")
        data["state"] = self.state.value
        data["spec"] = self.spec.to_dict()
        data["history"] = [epoch.to_dict() for epoch in self.history]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingRecord:
        data = dict(data)
        data["spec"] = TrainingSpec.from_dict(data["spec"])
        data["state"] = JobState(data.get("state", JobState.QUEUED))
        data["history"] = [EpochMetrics.from_dict(item) for item in data.get("history", [])]
        data.pop("live", None)
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
