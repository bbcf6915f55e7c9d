"""Memory modes (where a pipeline's weights live) and out-of-memory handling.

``full``: every weight stays on the device; fastest. ``lowvram``: model CPU offload (each model moves
to the device only while it runs), VAE slicing (one image at a time) and tiling (large images in
tiles), and sliced attention: SDXL and AnimateDiff fit a 12 GiB card, at some speed, and the
low-order bits of images differ from ``full``. ``auto`` picks ``full`` when the device has the
family's threshold of free memory, else ``lowvram``; on the CPU it is always ``full`` (offloading to
where the weights already are gains nothing). In ``full`` mode attention runs through PyTorch's
fused scaled-dot-product attention (SDPA).

Out-of-memory errors (``torch.OutOfMemoryError``, and the RuntimeError texts CUDA, HIP and the CPU
allocator use) become ``genmesh.errors.ResourceExhausted`` with advice, after the allocator cache
is emptied, so the same pipeline serves the next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog
import torch

from genmesh.errors import InvalidArgument, ResourceExhausted
from servers.compute.devices import backend_of, device_info
from servers.compute.memory import free_device_memory, is_out_of_memory

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

log = structlog.get_logger(__name__)


class MemoryMode(StrEnum):
    AUTO = "auto"
    FULL = "full"
    LOW_VRAM = "lowvram"


def parse_memory_mode(value: str | MemoryMode) -> MemoryMode:
    try:
        return MemoryMode(value)
    except ValueError:
        allowed = ", ".join(mode.value for mode in MemoryMode)
        raise InvalidArgument(f"memory_mode: unknown mode {value!r}; allowed: {allowed}", field="memory_mode") from None


def resolve_memory_mode(mode: str | MemoryMode, device: torch.device, *, full_mode_min_free_bytes: int) -> MemoryMode:
    """``full`` or ``lowvram``: ``auto`` decided from the device's free memory now."""
    mode = parse_memory_mode(mode)
    if mode is not MemoryMode.AUTO:
        return mode
    if device.type != "cuda":
        return MemoryMode.FULL
    free = device_info(device).free_bytes or 0
    return MemoryMode.FULL if free >= full_mode_min_free_bytes else MemoryMode.LOW_VRAM


def use_sdpa_attention(pipe: DiffusionPipeline) -> None:
    """Run every attention layer of the UNet and VAE through PyTorch's fused SDPA kernels."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    for name in ("unet", "vae"):
        model = getattr(pipe, name, None)
        if model is not None and hasattr(model, "set_attn_processor"):
            model.set_attn_processor(AttnProcessor2_0())


def apply_memory_mode(pipe: DiffusionPipeline, mode: MemoryMode, device: torch.device) -> None:
    """Place ``pipe`` on ``device`` as ``mode`` (already resolved: ``full`` or ``lowvram``) says."""
    if mode is MemoryMode.AUTO:
        raise ValueError("resolve the memory mode before applying it")
    if mode is MemoryMode.FULL:
        use_sdpa_attention(pipe)
        pipe.to(device)
        return
    pipe.enable_attention_slicing("auto")
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()
    if device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)


IMAGE_ADVICE = "use a smaller width and height or fewer images (num_images)"
VIDEO_ADVICE = "use fewer frames (num_frames) or a smaller width and height"


def out_of_memory_error(
    device: torch.device, mode: MemoryMode | None = None, advice: str = IMAGE_ADVICE
) -> ResourceExhausted:
    if mode is not MemoryMode.LOW_VRAM and device.type == "cuda":
        advice += ", or run the server with memory mode lowvram"
    where = f"the {backend_of(device).upper()} device {device}" if device.type == "cuda" else "the CPU"
    return ResourceExhausted(f"{where} ran out of memory for this request: {advice}")


@contextmanager
def out_of_memory_guard(
    device: torch.device, mode: MemoryMode | None = None, advice: str = IMAGE_ADVICE
) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into ``ResourceExhausted`` with advice, after
    freeing the memory the failed call held (the traceback's frames are dropped first)."""
    try:
        yield
        return
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
        failure = f"{type(exc).__name__}: {first_line}"
    # Outside the except block: the exception and the tensors its frames referenced are gone.
    free_device_memory(device)
    log.warning("out_of_memory", device=str(device), memory_mode=mode and mode.value, error=failure)
    raise out_of_memory_error(device, mode, advice)
