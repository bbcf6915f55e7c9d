"""GenerateSyntheticData as a job: make the pairs, upload them, write the batch manifest."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import structlog

from genmesh.errors import GenmeshError
from servers.runtime.events import StageChanged
from servers.runtime.queue import JobContext
from servers.training.data.synthetic import (
    SyntheticSpec,
    dataset_prefix,
    encode_png,
    generate_pairs,
    make_batch_id,
    manifest,
    manifest_key,
)
from storage.buckets import SYNTHETIC_DATA, TRAINING_DATA
from storage.object_store import ObjectStore, StoredObject

log = structlog.get_logger(__name__)


def _remove(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(TRAINING_DATA, key)
        except GenmeshError as exc:
            log.warning("synthetic_cleanup_failed", key=key, error=exc.message)


@dataclass(frozen=True)
class SyntheticOutcome:
    spec: SyntheticSpec
    batch_id: str
    dataset_prefix: str
    pair_count: int
    manifest: StoredObject
    total_bytes: int
    total_seconds: float


def run_synthetic(store: ObjectStore, spec: SyntheticSpec, context: JobContext) -> SyntheticOutcome:
    """Pairs go to training-data/{clean,degraded}/<name>.png as they are made; the manifest in
    synthetic-data/<batch_id>/ is written last, so a batch with a manifest is complete. A cancelled
    or failed batch deletes the pairs it wrote (best effort), so no half batch feeds a training job."""
    started = time.monotonic()
    batch_id = make_batch_id()
    context.output(StageChanged("generating"))
    metas, written, total_bytes = [], [], 0
    try:
        for pair in generate_pairs(spec, batch_id, check_cancelled=context.check_cancelled):
            clean, degraded = encode_png(pair.clean), encode_png(pair.degraded)
            written.append(pair.clean_key)
            store.put_bytes(TRAINING_DATA, pair.clean_key, clean, "image/png")
            written.append(pair.degraded_key)
            store.put_bytes(TRAINING_DATA, pair.degraded_key, degraded, "image/png")
            total_bytes += len(clean) + len(degraded)
            metas.append(pair.meta())
            context.progress(len(metas), spec.num_images or len(metas))
        context.output(StageChanged("saving"))
        data = json.dumps(manifest(spec, batch_id, metas), indent=1).encode()
        stored = store.put_bytes(SYNTHETIC_DATA, manifest_key(batch_id), data, "application/json")
    except BaseException:
        _remove(store, written)
        raise
    return SyntheticOutcome(
        spec=spec,
        batch_id=batch_id,
        dataset_prefix=dataset_prefix(spec.dataset_name, batch_id),
        pair_count=len(metas),
        manifest=stored,
        total_bytes=total_bytes + len(data),
        total_seconds=time.monotonic() - started,
    )
