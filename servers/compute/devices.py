"""Device, dtype and CPU thread selection for torch.

ROCm builds of torch answer ``torch.cuda.is_available()`` and use device ``"cuda"``;
``torch.version.hip`` tells them apart, which only matters for reporting and error texts.
fp16 on a GPU, fp32 on the CPU (CPU fp16 kernels are slow or missing). The CPU thread count is
always set explicitly: torch's default on small shared machines makes timings swing tenfold.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from genmesh.errors import InvalidArgument, Unavailable

_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    backend: str  # "cuda", "rocm" or "cpu"
    name: str  # e.g. "NVIDIA H100 80GB HBM3", "AMD Radeon RX 6700 XT", "cpu"
    total_bytes: int | None  # device memory; None for the CPU
    free_bytes: int | None


def backend_of(device: torch.device) -> str:
    if device.type == "cuda":
        return "rocm" if torch.version.hip else "cuda"
    return device.type


def select_device(preference: str = "auto") -> torch.device:
    """``"auto"`` (the first GPU if there is one, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
    (``"rocm"``/``"rocm:N"`` are accepted as aliases: ROCm torch calls its GPUs ``cuda``)."""
    preference = preference.strip().lower() or "auto"
    if preference == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if preference.startswith("rocm"):
        preference = "cuda" + preference[len("rocm") :]
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise InvalidArgument(
            f"device: unknown device {preference!r} (auto, cpu, cuda, cuda:N)", field="device"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Unavailable(f"device {preference!r} asked for, but torch sees no GPU (is this a CPU build of torch?)")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise Unavailable(f"device {preference!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise InvalidArgument(
            f"device: unsupported device type {device.type!r} (auto, cpu, cuda, cuda:N)", field="device"
        )
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def parse_dtype(name: str, device: torch.device) -> torch.dtype:
    """``"auto"`` (fp16 on a GPU, fp32 on the CPU), ``"float16"``, ``"bfloat16"`` or ``"float32"``."""
    if name in ("", "auto"):
        return default_dtype(device)
    try:
        return _DTYPES[name]
    except KeyError:
        raise InvalidArgument(f"dtype: unknown dtype {name!r} (auto, {', '.join(_DTYPES)})", field="dtype") from None


def device_info(device: torch.device) -> DeviceInfo:
    """What the device is and how much memory it has free now."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return DeviceInfo(device, backend_of(device), torch.cuda.get_device_name(device), total, free)
    return DeviceInfo(device, backend_of(device), device.type, None, None)


def device_label(device: torch.device) -> str:
    """``"cuda:0"`` or ``"cpu"``, as results report it."""
    if device.type == "cuda":
        return f"cuda:{0 if device.index is None else device.index}"
    return device.type


def configure_threads(threads: int) -> None:
    """Set torch's intra-op CPU thread count (and the inter-op pool when it can still be set)."""
    if threads < 1:
        raise InvalidArgument(f"threads must be at least 1 (got {threads})", field="threads")
    torch.set_num_threads(threads)
    # The inter-op pool can only be sized before the first parallel work; later calls keep it.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
