"""Object storage for genmesh: buckets of the product brief, key layout, an S3 client with retries."""

from storage.buckets import (
    ALL_BUCKETS,
    EVALUATION,
    MODELS,
    OUTPUTS,
    SYNTHETIC_DATA,
    TRAINING_DATA,
    TRAINING_OUTPUTS,
)
from storage.keys import join_key, output_key, output_prefix, validate_job_id, validate_key, validate_key_part
from storage.object_store import ObjectEntry, ObjectStore, RetryPolicy, StorageSettings, StoredObject

__all__ = [
    "ALL_BUCKETS",
    "EVALUATION",
    "MODELS",
    "OUTPUTS",
    "SYNTHETIC_DATA",
    "TRAINING_DATA",
    "TRAINING_OUTPUTS",
    "ObjectEntry",
    "ObjectStore",
    "RetryPolicy",
    "StorageSettings",
    "StoredObject",
    "join_key",
    "output_key",
    "output_prefix",
    "validate_job_id",
    "validate_key",
    "validate_key_part",
]
