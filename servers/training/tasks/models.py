"""Short jobs on registered models: RestoreImage and EvaluateModel (grpc-free)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from PIL import Image

from genmesh.errors import InvalidArgument
from servers.compute.devices import select_device
from servers.media.images import CONTENT_TYPES, EXTENSIONS, ImageFormat, decode_image, encode_image
from servers.runtime.events import StageChanged
from servers.runtime.model_cache import ModelCache
from servers.runtime.queue import JobContext
from servers.training import registry
from servers.training.data.pairs import decode, find_pairs
from servers.training.model.checkpoint import LoadedModel, load_restoration_model
from servers.training.model.metrics import mean_quality, quality
from servers.training.model.tiling import count_tiles, restore_image
from servers.training.types import Quality
from storage.buckets import EVALUATION, OUTPUTS, TRAINING_DATA
from storage.keys import output_prefix
from storage.object_store import ObjectStore, StoredObject

MAX_RESTORE_SIDE = 16384
MIN_RESTORE_SIDE = 8


@dataclass(frozen=True)
class RestoreRequest:
    model_id: str
    image_data: bytes | None = None
    image_ref: tuple[str, str] | None = None
    tile_size: int = 512
    tile_overlap: int = 32
    output_format: ImageFormat = ImageFormat.PNG
    quality: int = 90
    return_inline: bool = False


@dataclass(frozen=True)
class RestoreOutcome:
    stored: StoredObject
    data: bytes
    model_id: str
    width: int
    height: int
    tile_count: int
    tile_size: int
    tile_overlap: int
    total_seconds: float


@dataclass(frozen=True)
class EvaluateOutcome:
    model_id: str
    dataset_prefix: str
    pair_count: int
    metrics: Quality
    baseline: Quality
    record: StoredObject
    total_seconds: float


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = (tensor.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


class ModelTasks:
    """Registered models stay loaded for a while (keep-alive), one at a time."""

    def __init__(self, store: ObjectStore, *, device: str, amp: bool, keep_alive_seconds: float = 300.0) -> None:
        self.store = store
        self.device = select_device(device)
        self.amp = amp
        self.models: ModelCache[str, LoadedModel] = ModelCache(self._load, keep_alive_seconds=keep_alive_seconds)

    def _load(self, model_id: str) -> LoadedModel:
        return load_restoration_model(registry.load_model_bytes(self.store, model_id), self.device)

    def restore(self, request: RestoreRequest, context: JobContext) -> RestoreOutcome:
        started = time.monotonic()
        registry.get_model(self.store, request.model_id)  # NotFound before any work
        if request.image_ref is not None:
            bucket, key = request.image_ref
            data = self.store.get_bytes(bucket, key)
            field = "image_ref"
        else:
            data, field = request.image_data or b"", "image_data"
        image = decode_image(data, field=field, max_side=MAX_RESTORE_SIDE, max_pixels=MAX_RESTORE_SIDE**2 // 4)
        if min(image.size) < MIN_RESTORE_SIDE:
            raise InvalidArgument(
                f"{field}: the image is {image.width}x{image.height}; at least {MIN_RESTORE_SIDE} pixels a side",
                field=field,
            )
        context.output(StageChanged("loading_model"))
        with self.models.use(request.model_id) as model:
            context.output(StageChanged("restoring"))
            tensor = to_tensor(image)
            tile = request.tile_size if request.tile_size and request.tile_size < max(image.size) else 0
            restored = restore_image(
                model.module,
                tensor,
                tile_size=tile or None,
                overlap=request.tile_overlap if tile else 0,
                on_tile=lambda done, total: context.progress(done, total),
                check_cancelled=context.check_cancelled,
                amp=self.amp,
            )
        context.output(StageChanged("saving"))
        encoded = encode_image(to_image(restored), request.output_format, quality=request.quality)
        key = f"{output_prefix(context.job_id)}restored.{EXTENSIONS[request.output_format]}"
        stored = self.store.put_bytes(OUTPUTS, key, encoded, CONTENT_TYPES[request.output_format])
        return RestoreOutcome(
            stored=stored,
            data=encoded,
            model_id=request.model_id,
            width=image.width,
            height=image.height,
            tile_count=count_tiles(image.height, image.width, tile or None, request.tile_overlap if tile else 0),
            tile_size=tile,
            tile_overlap=request.tile_overlap if tile else 0,
            total_seconds=time.monotonic() - started,
        )

    def evaluate(self, model_id: str, prefix: str, max_pairs: int | None, context: JobContext) -> EvaluateOutcome:
        started = time.monotonic()
        registry.get_model(self.store, model_id)
        found, _ = find_pairs(self.store, prefix)
        found = found[:max_pairs] if max_pairs else found
        restored_q: list[Quality] = []
        baseline_q: list[Quality] = []
        per_pair = []
        with self.models.use(model_id) as model:
            for index, (name, clean_key, degraded_key) in enumerate(found, start=1):
                context.check_cancelled()
                clean = decode(self.store.get_bytes(TRAINING_DATA, clean_key))
                degraded = decode(self.store.get_bytes(TRAINING_DATA, degraded_key))
                if clean is None or degraded is None or clean.shape != degraded.shape:
                    continue
                restored = restore_image(model.module, degraded, tile_size=None, amp=self.amp)
                ours, base = quality(restored[None], clean[None]), quality(degraded[None], clean[None])
                restored_q.append(ours)
                baseline_q.append(base)
                per_pair.append({"name": name, "restored": ours.to_dict(), "degraded": base.to_dict()})
                context.progress(index, len(found))
        if not restored_q:
            raise InvalidArgument(
                f"dataset_prefix: no readable pairs under training-data/clean|degraded/{prefix}*",
                field="dataset_prefix",
            )
        metrics, baseline = mean_quality(restored_q), mean_quality(baseline_q)
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
        record = {
            "model_id": model_id,
            "dataset_prefix": prefix,
            "pair_count": len(restored_q),
            "metrics": metrics.to_dict(),
            "baseline": baseline.to_dict(),
            "pairs": per_pair,
        }
        stored = self.store.put_bytes(
            EVALUATION, f"{model_id}/{stamp}/result.json", json.dumps(record, indent=1).encode(), "application/json"
        )
        return EvaluateOutcome(model_id, prefix, len(restored_q), metrics, baseline, stored, time.monotonic() - started)

    def close(self) -> None:
        self.models.close()
