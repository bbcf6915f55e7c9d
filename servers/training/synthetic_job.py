"""GenerateSyntheticData as a job: make the pairs, upload them, write the batch manifest."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from servers.runtime.jobs import JobContext
from servers.training.synthetic import (
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
    synthetic-data/<batch_id>/ is written last, so a batch with a manifest is complete (a cancelled
    batch keeps the pairs already uploaded, without a manifest)."""
    started = time.monotonic()
    batch_id = make_batch_id()
    context.output("generating")
    metas, total_bytes = [], 0
    for pair in generate_pairs(spec, batch_id, check_cancelled=context.check_cancelled):
        clean, degraded = encode_png(pair.clean), encode_png(pair.degraded)
        store.put_bytes(TRAINING_DATA, pair.clean_key, clean, "image/png")
        store.put_bytes(TRAINING_DATA, pair.degraded_key, degraded, "image/png")
        total_bytes += len(clean) + len(degraded)
        metas.append(pair.meta())
        context.progress(len(metas), spec.num_images or len(metas))
    context.output("saving")
    data = json.dumps(manifest(spec, batch_id, metas), indent=1).encode()
    stored = store.put_bytes(SYNTHETIC_DATA, manifest_key(batch_id), data, "application/json")
    return SyntheticOutcome(
        spec=spec,
        batch_id=batch_id,
        dataset_prefix=dataset_prefix(spec.dataset_name, batch_id),
        pair_count=len(metas),
        manifest=stored,
        total_bytes=total_bytes + len(data),
        total_seconds=time.monotonic() - started,
    )
