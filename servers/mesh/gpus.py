"""Whether the local mesh's model servers will share one GPU, decided without importing torch (the
launcher starts in a second and never touches a device itself).

A GPU is visible when its device node exists (``/dev/nvidia0`` for NVIDIA, ``/dev/kfd`` for ROCm)
and the usual visibility variables do not hide it. ``GENMESH_DEVICE=cpu`` (the servers' own device
setting) keeps every diffusion server on the CPU. When several model servers run on one machine
with a GPU they share it, so the agent asks each service to unload its model when its stage ends
(``keep_alive_seconds=0``): on a 12 GB card the text, image and video models do not fit at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEVICE_NODES = (Path("/dev/nvidia0"), Path("/dev/kfd"))
VISIBILITY_VARIABLES = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")
MODEL_SERVICES = ("text", "image", "video")


def gpu_visible(environ: Mapping[str, str] = os.environ, nodes: tuple[Path, ...] = DEVICE_NODES) -> bool:
    """True when a process started with ``environ`` would see a GPU."""
    if environ.get("GENMESH_DEVICE", "auto").strip().lower() == "cpu":
        return False
    for name in VISIBILITY_VARIABLES:
        value = environ.get(name)
        if value is not None and value.strip() in ("", "-1"):
            return False
    return any(node.exists() for node in nodes)


def share_one_gpu(
    services: tuple[str, ...] | list[str],
    environ: Mapping[str, str] = os.environ,
    nodes: tuple[Path, ...] = DEVICE_NODES,
) -> bool:
    """True when two or more model services run here and a GPU is visible to them."""
    return sum(name in MODEL_SERVICES for name in services) >= 2 and gpu_visible(environ, nodes)
