"""Out-of-memory detection and freeing, in one place for every service.

``is_out_of_memory`` recognises torch's ``OutOfMemoryError`` and the RuntimeError texts CUDA, HIP
and the CPU allocator use, without importing torch (the Text server never loads it): torch is
only consulted when the process already imported it.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

_OOM_TEXTS = ("out of memory", "can't allocate memory", "hiperroroutofmemory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError, MemoryError, and the RuntimeErrors that report the same on HIP/CPU."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in _OOM_TEXTS)


def free_device_memory(device: Any) -> None:
    """Collect garbage and hand the allocator's cached blocks back to the device (a ``torch.device``)."""
    gc.collect()
    if getattr(device, "type", None) == "cuda":
        sys.modules["torch"].cuda.empty_cache()
