"""Files the training engine writes and reads: job checkpoints and registered model files.

Both are ``torch.save`` pickles of plain containers (dicts, lists, strings, numbers, tensors) and
are always read back with ``torch.load(weights_only=True)``, so a file from storage cannot run
code. A ``format`` key tells them apart and versions them.

- Checkpoint (``checkpoints/<job_id>/last.pt``): ``Trainer.state_dict()``: model, optimizer,
  scheduler and grad-scaler state, epochs done, global step, RNG states, metrics history, the best
  epoch's weights and metrics. ``Trainer.resume`` continues from it.
- Model file (a registered model in the ``models`` bucket): ``{"format", "architecture", "config",
  "state_dict", "metrics", "baseline", "epoch", "parameter_count"}``: what ``RestoreImage`` and
  ``EvaluateModel`` load with ``load_restoration_model``. ``config`` is the full
  ``RestormerConfig``, so a model keeps loading if a preset's table entry changes later.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from genmesh.errors import InvalidArgument
from servers.training.types import Quality

from .restormer import Restormer, RestormerConfig, count_parameters

CHECKPOINT_FORMAT = "genmesh.training.checkpoint/1"
MODEL_FORMAT = "genmesh.training.model/1"

Source = str | os.PathLike[str] | bytes | BinaryIO


def to_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_file(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to ``path`` atomically (a temporary file in the same folder, then renamed), so
    a crash never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_file(source: Source, expected_format: str, field: str) -> dict[str, Any]:
    """Load a file written by this module (path, bytes or binary file object) onto the CPU and
    check its format; ``InvalidArgument`` naming ``field`` when it is not one."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise InvalidArgument(f"{field}: not a readable {expected_format} file ({exc})", field=field) from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InvalidArgument(f"{field}: expected a {expected_format} file, found {found!r}", field=field)
    return data


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's weights (independent of later training)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def model_file(
    *,
    architecture: str,
    config: RestormerConfig,
    state_dict: dict[str, torch.Tensor],
    metrics: Quality | None = None,
    baseline: Quality | None = None,
    epoch: int = 0,
) -> dict[str, Any]:
    """The registered-model file's content."""
    return {
        "format": MODEL_FORMAT,
        "architecture": architecture,
        "config": config.to_dict(),
        "state_dict": state_dict,
        "metrics": metrics.to_dict() if metrics else None,
        "baseline": baseline.to_dict() if baseline else None,
        "epoch": epoch,
        "parameter_count": sum(t.numel() for t in state_dict.values()),
    }


@dataclass
class LoadedModel:
    """A registered model ready to run: ``module`` is in eval mode on the requested device."""

    module: Restormer
    architecture: str
    config: RestormerConfig
    metrics: Quality | None
    baseline: Quality | None
    epoch: int
    parameter_count: int


def load_restoration_model(source: Source, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file (a path, its bytes or a binary file object) onto ``device``.
    ``InvalidArgument`` (field ``model``) when it is not a model file or its weights do not match
    its architecture."""
    data = read_file(source, MODEL_FORMAT, field="model")
    config = RestormerConfig.from_dict(data["config"])
    with torch.device("meta"):
        module = Restormer(config)
    try:
        module.load_state_dict(data["state_dict"], strict=True, assign=True)
    except RuntimeError as exc:
        raise InvalidArgument(
            f"model: weights do not match architecture {data['architecture']!r}: {exc}", field="model"
        ) from None
    module = module.to(device).eval()
    metrics, baseline = data.get("metrics"), data.get("baseline")
    return LoadedModel(
        module=module,
        architecture=str(data["architecture"]),
        config=config,
        metrics=Quality.from_dict(metrics) if metrics else None,
        baseline=Quality.from_dict(baseline) if baseline else None,
        epoch=int(data.get("epoch", 0)),
        parameter_count=count_parameters(module),
    )
