"""Training jobs' records: each is the job's one record, the shared job record of every service
(``servers.runtime.job_records``): the Training service's ``Job`` message (its status and the whole
``TrainingJob``) as JSON under ``jobs/<job_id>.json`` in the ``outputs`` bucket. So GetJob answers
a training job from any replica exactly as it answers a task, from the same place.

Unlike a task's, which is written once it ended, a training job's record is rewritten whole at
creation, start, every epoch and the end: a restarted server reads them back (``all``), answers
for finished jobs and resumes the interrupted ones from their checkpoints. The pairs a job trains
on are stored beside its checkpoints (``checkpoints/<job_id>/pairs.json`` in
``training-outputs``): they are what resuming needs, not a fact of the job.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import structlog
from google.protobuf import json_format

from genmesh.errors import NotFound
from genmesh.training.v1 import training_pb2
from servers.runtime.events import JobState
from servers.runtime.job_records import PREFIX, TerminalRecords
from servers.training.api import convert
from servers.training.jobs.records import TrainingRecord
from servers.training.legacy import stored_epoch
from servers.training.types import DatasetStats, TrainingSpec
from storage.buckets import OUTPUTS, TRAINING_OUTPUTS
from storage.keys import training_output_prefix
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

TRAINING_PREFIX = "trn"  # training jobs' ids; the tasks' are "tsk"
LEGACY_JOBS_PREFIX = "jobs/"  # where records were, in training-outputs, before they were the shared ones


def pairs_key(job_id: str) -> str:
    return training_output_prefix("checkpoints", job_id) + "pairs.json"


class JobRecords:
    """Load and save training jobs' records (and the pairs each trains on)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.records = TerminalRecords(store)

    def save(self, record: TrainingRecord) -> None:
        self.records.write(record.job_id, convert.training_job_as_job(record, None))

    def save_pairs(self, record: TrainingRecord) -> None:
        data = json.dumps(record.pair_names).encode()
        self.store.put_bytes(TRAINING_OUTPUTS, pairs_key(record.job_id), data, "application/json")

    def pairs(self, job_id: str) -> list[str]:
        """The pairs the job chose when it first ran; [] before that."""
        try:
            return list(json.loads(self.store.get_bytes(TRAINING_OUTPUTS, pairs_key(job_id))))
        except NotFound:
            return []

    def load(self, job_id: str) -> TrainingRecord:
        message = self.records.load(job_id, training_pb2.Job)
        if message is None or not message.HasField("training_job"):
            raise NotFound(f"training job {job_id!r} not found", field="job_id")
        return convert.training_record(message)

    def all(self) -> list[TrainingRecord]:
        """Every training job's record, newest first (records share the folder with every other job's:
        training jobs' ids start with "trn-")."""
        records = []
        for entry in self.store.list(OUTPUTS, f"{PREFIX}{TRAINING_PREFIX}-"):
            try:
                message = json_format.Parse(self.store.get_bytes(OUTPUTS, entry.key), training_pb2.Job())
                records.append(convert.training_record(message))
            except (json_format.ParseError, KeyError, ValueError) as exc:
                log.warning("training_record_unreadable", key=entry.key, error=str(exc))
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    def migrate_legacy(self) -> list[str]:
        """Rewrite the records of the old layout (``legacy.py``) as this one's, once: the new record
        and the pairs first, then the old object is removed (a crash in between only repeats it)."""
        moved = []
        for entry in list(self.store.list(TRAINING_OUTPUTS, LEGACY_JOBS_PREFIX)):
            if not entry.key.endswith(".json"):
                continue
            try:
                record = legacy_record(json.loads(self.store.get_bytes(TRAINING_OUTPUTS, entry.key)))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("training_record_unreadable", key=entry.key, error=str(exc))
                continue
            if record.pair_names:
                self.save_pairs(record)
            self.save(record)
            self.store.delete(TRAINING_OUTPUTS, entry.key)
            moved.append(record.job_id)
        if moved:
            log.info("training_records_migrated", jobs=len(moved))
        return moved


def legacy_record(data: Mapping[str, Any]) -> TrainingRecord:
    """A record of the old layout: ``dataclasses.asdict`` of the record, ``state`` as its value,
    epochs in any of their older shapes."""
    values = dict(data)
    values["spec"] = TrainingSpec.from_dict(values["spec"])
    values["state"] = JobState(values.get("state", JobState.QUEUED))
    values["history"] = [stored_epoch(item) for item in values.get("history", [])]
    values["dataset"] = DatasetStats(**values["dataset"]) if values.get("dataset") else None
    known = {field.name for field in dataclasses.fields(TrainingRecord)} - {"live"}
    return TrainingRecord(**{key: value for key, value in values.items() if key in known})
