"""Training pairs from object storage: training-data/clean/<name>.png + training-data/degraded/<name>.png.

Unpaired, unreadable, mismatched or too-small files are counted and skipped, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import structlog
import torch

from genmesh.errors import InvalidArgument
from servers.media.images import decode_image
from servers.training.types import DatasetStats
from storage.buckets import TRAINING_DATA
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

CLEAN, DEGRADED = "clean/", "degraded/"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_SIDE = 8192


@dataclass
class Pairs:
    names: list[str]
    degraded: list[torch.Tensor]  # (3, H, W) float in [0, 1]
    clean: list[torch.Tensor]
    stats: DatasetStats = field(default_factory=DatasetStats)


def _names(store: ObjectStore, folder: str, prefix: str) -> dict[str, str]:
    """{pair name: key} of the images under ``folder`` whose name starts with ``prefix``."""
    found = {}
    for entry in store.list(TRAINING_DATA, folder + prefix):
        name, dot, suffix = entry.key[len(folder) :].rpartition(".")
        if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES and "/" not in name:
            found[name] = entry.key
    return found


def find_pairs(store: ObjectStore, prefix: str) -> tuple[list[tuple[str, str, str]], DatasetStats]:
    """Complete pairs (name, clean key, degraded key) in name order, and the file counts."""
    clean, degraded = _names(store, CLEAN, prefix), _names(store, DEGRADED, prefix)
    names = sorted(clean.keys() & degraded.keys())
    stats = DatasetStats(clean_files=len(clean), degraded_files=len(degraded), pairs_found=len(names))
    return [(name, clean[name], degraded[name]) for name in names], stats


def decode(data: bytes) -> torch.Tensor | None:
    """RGB float tensor (3, H, W) in [0, 1], or None for data that is not a sane image (the shared
    guarded decoder: size checked before decoding, every mode to RGB, EXIF orientation applied)."""
    try:
        image = decode_image(data, field="pair", max_side=MAX_SIDE)
    except InvalidArgument:
        return None
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_pairs(
    store: ObjectStore,
    prefix: str,
    *,
    max_pairs: int | None,
    min_side: int,
    field_name: str = "dataset_prefix",
    names: list[str] | None = None,
    check_cancelled: Callable[[], None] = lambda: None,
) -> Pairs:
    """Download and decode the pairs; InvalidArgument naming ``field_name`` when none is usable."""
    found, stats = find_pairs(store, prefix)
    if names is not None:  # a resumed job: exactly the pairs it chose before
        chosen = set(names)
        wanted = [pair for pair in found if pair[0] in chosen]
    else:
        wanted = found[:max_pairs] if max_pairs else found
    pairs = Pairs([], [], [], stats)
    skipped = too_small = 0
    for name, clean_key, degraded_key in wanted:
        check_cancelled()
        clean = decode(store.get_bytes(TRAINING_DATA, clean_key))
        degraded = decode(store.get_bytes(TRAINING_DATA, degraded_key))
        readable = clean is not None and degraded is not None and clean.shape == degraded.shape
        usable = readable and min(clean.shape[1:]) >= min_side
        too_small += readable and not usable
        if usable:
            pairs.names.append(name)
            pairs.clean.append(clean)
            pairs.degraded.append(degraded)
        else:
            skipped += 1
            log.info("pair_skipped", name=name, reason="unreadable, mismatched or smaller than a patch")
    stats = pairs.stats = replace(stats, pairs_used=len(pairs.names), skipped_pairs=skipped)
    if stats.pairs_used < 2 and too_small:
        raise InvalidArgument(
            f"spec.patch_size: {too_small} of the {len(wanted)} pairs are smaller than the {min_side} px patch; "
            "use a smaller patch_size or larger images",
            field="spec.patch_size",
        )
    if stats.pairs_used < 2:
        raise InvalidArgument(
            f"{field_name}: {stats.pairs_used} usable pairs under training-data/clean|degraded/{prefix}* "
            f"({stats.pairs_found} complete pairs found, {stats.skipped_pairs} skipped); at least 2 are needed: "
            "generate synthetic data or upload pairs first",
            field=field_name,
        )
    return pairs
