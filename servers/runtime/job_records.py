"""Terminal job records in the object store, so a finished job stays answerable by GetJob after the
process that ran it is gone (killed, restarted, scaled down) or has forgotten it (retention).

A record is the service's own ``Job`` message as JSON under ``jobs/<job_id>.json`` in the
``outputs`` bucket: the one record of a job (its parameters, timings, owner and artifacts are in its
result). A job that ran has it written by its worker before its result goes out (``JobQueue.record``),
and its result's ``record`` points at it; best effort: a job never fails because its record could
not be written (the server logs ``job_record_not_saved`` and the result's ``record`` is cleared).
Then its ListJobs index entries (``job_listing.py``).

Outputs of older versions also have a ``result.json`` in their folder (``YYYYMMDD_HHmm/<job_id>/``),
to which their recorded result's ``record`` points; it is kept, never read.
"""

from __future__ import annotations

from typing import Any

import structlog
from google.protobuf import json_format

from genmesh.errors import GenmeshError, NotFound
from servers.runtime.events import JobState
from servers.runtime.job_listing import JobIndex, library_kind, output_kind
from servers.runtime.queue import Job
from storage.buckets import OUTPUTS
from storage.keys import validate_job_id
from storage.object_store import ObjectStore, StoredObject

log = structlog.get_logger(__name__)

PREFIX = "jobs/"


def record_key(job_id: str) -> str:
    return f"{PREFIX}{validate_job_id(job_id)}.json"


def record_object(store: ObjectStore, job_id: str) -> StoredObject:
    """Where the job's record is written, for its result's ``record``. Its size and hash stay empty:
    the record holds the result that points at it."""
    key = record_key(job_id)
    return StoredObject(OUTPUTS, key, store.presign_get(OUTPUTS, key), "application/json", 0, "")


class TerminalRecords:
    def __init__(self, store: ObjectStore, index: JobIndex | None = None, library: JobIndex | None = None) -> None:
        self.store = store
        self.index = index
        self.library = library  # the outputs library's index (``library.py``), for jobs that stored outputs

    def write(self, job_id: str, message: Any) -> None:
        """Blocking; raises what the store raises."""
        text = json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)
        self.store.put_bytes(OUTPUTS, record_key(job_id), text.encode(), content_type="application/json")

    def save(self, job: Job, message: Any) -> bool:
        """Blocking; never raises (a lost record only means GetJob cannot answer once the owner is
        gone, and ListJobs lists the job only while this process holds it). False when the record
        itself was not written."""
        job_id = job.id
        try:
            self.write(job_id, message)
        except GenmeshError as exc:
            log.warning("job_record_not_saved", job_id=job_id, error=exc.message)
            return False
        except Exception:
            log.exception("job_record_not_saved", job_id=job_id)
            return False
        try:
            if self.index is not None:
                self.index.add(job_id, job.created_at, job.state.value, job.method, job.owner)
                kind = output_kind(self.index.service, job.method)
                if self.library is not None and kind is not None and job.state is JobState.SUCCEEDED:
                    named = library_kind(kind, sub_job=bool(job.parent))
                    self.library.add(job_id, job.created_at, named, self.index.service, job.owner)
        except GenmeshError as exc:
            log.warning("job_not_indexed", job_id=job_id, error=exc.message)
        except Exception:
            log.exception("job_not_indexed", job_id=job_id)
        return True

    def load(self, job_id: str, message_type: type) -> Any | None:
        """The recorded message, or None when the job has no record (never finished, or unknown)."""
        try:
            data = self.store.get_bytes(OUTPUTS, record_key(job_id))
        except NotFound:
            return None
        return json_format.Parse(data, message_type(), ignore_unknown_fields=True)
