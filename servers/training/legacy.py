"""Shapes older versions stored, upgraded where they are read, so each type keeps one shape.

A deployed store keeps what earlier versions wrote, so these stay readable:

- Epoch metrics: job records written before ``EpochMetrics`` nested its qualities stored them flat
  (``{"psnr", "baseline_psnr", ...}`` or ``{"validation_psnr", ...}``), and older checkpoints stored
  ``end_time`` as an ISO datetime. ``upgrade_epoch`` turns each into ``EpochMetrics.to_dict``'s
  form (a missing loss or metric is NaN, a missing count 0).
- Training job records: before a training job's record was the shared job record, it was a JSON
  object of its own in ``training-outputs/jobs/<id>.json``; ``jobs/store.py`` rewrites those once
  at start (``JobRecords.migrate_legacy``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from servers.training.types import EpochMetrics

_QUALITIES = ("psnr", "ssim", "accuracy")


def upgrade_epoch(data: Mapping[str, Any]) -> dict[str, Any]:
    """Any stored form of one epoch's metrics, as ``EpochMetrics.to_dict`` writes it."""

    def quality(prefix: str) -> dict[str, Any]:
        nested = data.get(prefix)
        if isinstance(nested, Mapping):
            return dict(nested)
        flat = {}
        for name in _QUALITIES:
            for key in (f"{prefix}_{name}", name if prefix == "validation" else ""):
                if key in data:
                    flat[name] = data[key]
                    break
        return flat

    end = data.get("end_time")
    return {
        "epoch": int(data["epoch"]),
        "train_loss": data.get("train_loss", math.nan),
        "validation_loss": data.get("validation_loss", math.nan),
        "validation": quality("validation"),
        "baseline": quality("baseline"),
        "learning_rate": data.get("learning_rate", 0.0),
        "epoch_seconds": data.get("epoch_seconds", 0.0),
        "end_time": datetime.fromisoformat(end).timestamp() if isinstance(end, str) else float(end or 0.0),
        "global_step": data.get("global_step", 0),
        "best": data.get("best", False),
    }


def stored_epoch(data: Mapping[str, Any]) -> EpochMetrics:
    return EpochMetrics.from_dict(upgrade_epoch(data))
