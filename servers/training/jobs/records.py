"""A training job as the server holds it: the facts of its ``TrainingJob`` resource, plus where it
is inside its epoch while this process runs it. ``jobs/store.py`` persists it as the job's one
record; ``api/convert.py`` turns it into messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from servers.runtime.events import JobState
from servers.training.types import DatasetStats, EpochMetrics, EpochProgress, TrainingSpec


@dataclass
class TrainingRecord:
    job_id: str
    spec: TrainingSpec
    state: JobState = JobState.QUEUED
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
    dataset: DatasetStats | None = None  # once the job listed its pairs
    # The pairs chosen when the job first ran: a resumed job trains on exactly these, even if the
    # prefix matches other files by then (stored beside its checkpoints, not in the record).
    pair_names: list[str] = field(default_factory=list)
    error_code: str = ""
    error_message: str = ""
    cancel_reason: str = ""
    device: str = ""
    # Why it stopped the last time it was running, for its Resumed event (never stored: a record
    # left RUNNING means the server died, one left QUEUED after it started means a drain).
    interrupted_reason: str = ""
    client_id: str = ""  # its owner: the client id of the key that created it ("" without the gateway)
    # Where the job is inside its epoch while this process runs it (never persisted).
    live: EpochProgress | None = None

    @property
    def best(self) -> EpochMetrics | None:
        return next((item for item in self.history if item.epoch == self.best_epoch), None)

    @property
    def active(self) -> bool:
        return not self.state.terminal
