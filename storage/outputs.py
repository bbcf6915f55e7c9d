"""A generation job's folder in the ``outputs`` bucket: ``YYYYMMDD_HHmm/<job_id>/`` and its ``result.json``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from storage.buckets import OUTPUTS
from storage.keys import output_prefix
from storage.object_store import ObjectStore, StoredObject


def job_prefix(job_id: str) -> str:
    """Computed once per job, so every file of a job lands in the same minute folder."""
    return output_prefix(job_id)


def save_record(store: ObjectStore, prefix: str, record: dict[str, Any]) -> StoredObject:
    """The job's record (parameters, keys, timings) as ``<prefix>result.json``, stamped with its creation time."""
    record = {"created": datetime.now(UTC).isoformat(), **record}
    data = json.dumps(record, ensure_ascii=False, indent=2).encode()
    return store.put_bytes(OUTPUTS, f"{prefix}result.json", data, "application/json")
