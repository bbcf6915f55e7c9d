"""A generation job's folder in the ``outputs`` bucket: ``YYYYMMDD_HHmm/<job_id>/``. Its record is
not there but under ``jobs/<job_id>.json`` (``servers/runtime/job_records.py``); folders of older
versions also hold a ``result.json``."""

from __future__ import annotations

from storage.keys import output_prefix


def job_prefix(job_id: str) -> str:
    """Computed once per job, so every file of a job lands in the same minute folder."""
    return output_prefix(job_id)
