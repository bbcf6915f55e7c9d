"""The image-restoration model engine of the Training service: pure Python on torch.

No grpc, no protobuf, no storage; the shared types (``Quality``, ``EpochMetrics``) are
``servers.training.types``: the servicer turns requests into these types and moves bytes to
and from object storage. Errors are ``genmesh.errors`` classes. Modules:

- ``restormer``: the Restormer network, the ``ARCHITECTURES`` presets (tiny, small, base),
  ``build_model``, ``count_parameters``.
- ``metrics``: PSNR, SSIM and accuracy as the proto's ``QualityMetrics`` defines them.
- ``trainer``: ``TrainConfig``, ``Trainer`` (train / validate / best weights / checkpoint /
  resume / cancel), ``split_indices`` (the one train/validation split).
- ``checkpoint``: checkpoint and registered-model files, ``load_restoration_model``.
- ``tiling``: ``restore_image``, whole or in blended overlapping tiles.
"""

from .checkpoint import LoadedModel, load_restoration_model
from .metrics import accuracy, psnr, quality, ssim
from .restormer import ARCHITECTURES, Restormer, RestormerConfig, build_model, count_parameters
from .tiling import count_tiles, restore_image
from .trainer import TrainConfig, Trainer, TrainingDiverged, split_indices

__all__ = [
    "ARCHITECTURES",
    "LoadedModel",
    "Restormer",
    "RestormerConfig",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "accuracy",
    "build_model",
    "count_parameters",
    "count_tiles",
    "load_restoration_model",
    "psnr",
    "quality",
    "restore_image",
    "split_indices",
    "ssim",
]
