"""The buckets of the product brief (see docs: Storage layout). Layout inside each is in ``keys``."""

from __future__ import annotations

TRAINING_DATA = "training-data"
"""Training sets: ``clean/`` and ``degraded/``."""

MODELS = "models"
"""Model weights: ``layer_1/``, ``layer_2/``, ..."""

TRAINING_OUTPUTS = "training-outputs"
"""Training results: ``checkpoints/``, ``analysis/``, ``reports/``."""

SYNTHETIC_DATA = "synthetic-data"
EVALUATION = "evaluation"

OUTPUTS = "outputs"
"""Generated text, images and videos under ``YYYYMMDD_HHmm/<job id>/``."""

ALL_BUCKETS: tuple[str, ...] = (TRAINING_DATA, MODELS, TRAINING_OUTPUTS, SYNTHETIC_DATA, EVALUATION, OUTPUTS)
