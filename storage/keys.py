"""Object key layout and validation. Pure functions: no I/O.

Every key part that comes from a caller (job ids, file names) is checked here, so a key can never
climb out of its prefix ("..") or start with "/". Violations raise ``genmesh.errors.InvalidArgument``
naming the field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from genmesh.errors import InvalidArgument

MAX_KEY_BYTES = 1024  # S3's limit on a whole key, UTF-8 encoded
MAX_JOB_ID_LENGTH = 128

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

TrainingDataKind = Literal["clean", "degraded"]
TrainingOutputKind = Literal["checkpoints", "analysis", "reports"]


def validate_job_id(job_id: str, field: str = "job_id") -> str:
    """A job id is 1-128 of ``[A-Za-z0-9._-]``, starting with a letter or digit (so never ".." or "/")."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArgument(f"{field} must be a non-empty string", field=field)
    if len(job_id) > MAX_JOB_ID_LENGTH:
        raise InvalidArgument(f"{field} must be at most {MAX_JOB_ID_LENGTH} characters", field=field)
    if not _JOB_ID.fullmatch(job_id) or ".." in job_id:
        raise InvalidArgument(
            f"{field} may contain only letters, digits, '.', '_' and '-', must start with a letter or digit "
            f"and must not contain '..' (got {job_id!r})",
            field=field,
        )
    return job_id


def validate_key(key: str, field: str = "key") -> str:
    """A whole object key (may contain "/"): no leading "/", no empty, "." or ".." segments,
    no backslashes or control characters, at most 1024 UTF-8 bytes. A trailing "/" is allowed
    (prefixes end with one)."""
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"{field} must be a non-empty string", field=field)
    if key.startswith("/"):
        raise InvalidArgument(f"{field} must not start with '/' (got {key!r})", field=field)
    if "\\" in key or _CONTROL.search(key):
        raise InvalidArgument(f"{field} must not contain backslashes or control characters", field=field)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidArgument(f"{field} must be at most {MAX_KEY_BYTES} bytes in UTF-8", field=field)
    segments = key.split("/")
    if segments[-1] == "":  # trailing slash
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidArgument(
                f"{field} must not contain empty, '.' or '..' path segments (got {key!r})", field=field
            )
    return key


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def validate_bucket(bucket: str, field: str = "bucket") -> str:
    """An S3 bucket name: 3-63 of [a-z0-9.-], starting and ending with a letter or digit."""
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
        raise InvalidArgument(
            f"{field} must be an S3 bucket name: 3-63 lowercase letters, digits, '.' or '-' (got {bucket!r})",
            field=field,
        )
    return bucket


def validate_key_part(part: str, field: str = "name") -> str:
    """One segment of a key (a file name): a valid key without any "/"."""
    validate_key(part, field)
    if "/" in part:
        raise InvalidArgument(f"{field} must not contain '/' (got {part!r})", field=field)
    return part


def join_key(*parts: str) -> str:
    """Join prefixes and names with single slashes, validating the result (``join_key("a/", "b")`` is ``"a/b"``)."""
    joined = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return validate_key(joined)


def timestamp_folder(now: datetime) -> str:
    """``YYYYMMDD_HHmm`` in UTC. ``now`` must be timezone-aware (``datetime.now(UTC)``)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    return now.astimezone(UTC).strftime("%Y%m%d_%H%M")


def output_prefix(job_id: str, now: datetime | None = None) -> str:
    """Prefix in the ``outputs`` bucket for one job: ``"YYYYMMDD_HHmm/<job_id>/"`` (UTC)."""
    validate_job_id(job_id)
    return f"{timestamp_folder(now or datetime.now(UTC))}/{job_id}/"


def output_key(job_id: str, filename: str, now: datetime | None = None) -> str:
    """Key of one file produced by a job in the ``outputs`` bucket."""
    validate_key_part(filename, "filename")
    return output_prefix(job_id, now) + filename


def training_data_prefix(kind: TrainingDataKind) -> str:
    """``clean/`` or ``degraded/`` in the ``training-data`` bucket."""
    if kind not in ("clean", "degraded"):
        raise InvalidArgument(f"kind must be 'clean' or 'degraded' (got {kind!r})", field="kind")
    return f"{kind}/"


def model_prefix(layer: int) -> str:
    """``layer_<n>/`` in the ``models`` bucket (n >= 1)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
        raise InvalidArgument(f"layer must be an integer >= 1 (got {layer!r})", field="layer")
    return f"layer_{layer}/"


def training_output_prefix(kind: TrainingOutputKind, job_id: str) -> str:
    """``checkpoints/<job_id>/``, ``analysis/<job_id>/`` or ``reports/<job_id>/`` in ``training-outputs``."""
    if kind not in ("checkpoints", "analysis", "reports"):
        raise InvalidArgument(f"kind must be 'checkpoints', 'analysis' or 'reports' (got {kind!r})", field="kind")
    return f"{kind}/{validate_job_id(job_id)}/"
