"""Device/dtype/thread selection, memory-mode resolution, the OOM classifier and guard, and the
latent preview."""

from __future__ import annotations

import pytest
import torch

from genmesh.errors import Cancelled, InvalidArgument, ResourceExhausted, Unavailable
from servers.compute.devices import (
    backend_of,
    configure_threads,
    default_dtype,
    device_label,
    parse_dtype,
    select_device,
)
from servers.compute.memory import is_out_of_memory
from servers.diffusion.families import ModelFamily
from servers.diffusion.memory import (
    MemoryMode,
    out_of_memory_error,
    out_of_memory_guard,
    parse_memory_mode,
    resolve_memory_mode,
)
from servers.diffusion.progress import StepCallback, latent_preview, latents_to_rgb

CPU = torch.device("cpu")
GPU = torch.device("cuda", 0)


def test_device_selection_on_a_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == CPU and select_device("cpu") == CPU
    with pytest.raises(Unavailable, match="no GPU"):
        select_device("cuda")
    with pytest.raises(Unavailable):
        select_device("rocm:0")
    with pytest.raises(InvalidArgument) as error:
        select_device("tpu")
    assert error.value.field == "device"


def test_rocm_is_cuda_with_hip(monkeypatch: pytest.MonkeyPatch) -> None:
    assert backend_of(CPU) == "cpu"
    monkeypatch.setattr(torch.version, "hip", None)
    assert backend_of(GPU) == "cuda"
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    assert backend_of(GPU) == "rocm"
    assert "ROCM" in str(out_of_memory_error(GPU))
    assert device_label(torch.device("cuda")) == "cuda:0" and device_label(CPU) == "cpu"


def test_dtypes() -> None:
    assert default_dtype(CPU) == torch.float32 and default_dtype(GPU) == torch.float16
    assert parse_dtype("auto", GPU) == torch.float16 and parse_dtype("bfloat16", CPU) == torch.bfloat16
    with pytest.raises(InvalidArgument):
        parse_dtype("float8", CPU)


def test_threads_are_explicit() -> None:
    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        configure_threads(before)
    with pytest.raises(InvalidArgument):
        configure_threads(0)


def test_memory_mode_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_memory_mode("auto", CPU, full_mode_min_free_bytes=1) is MemoryMode.FULL
    assert resolve_memory_mode("lowvram", CPU, full_mode_min_free_bytes=1) is MemoryMode.LOW_VRAM
    free = {"bytes": 20 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 24 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Radeon RX 6700 XT")
    assert resolve_memory_mode("auto", GPU, full_mode_min_free_bytes=16 * 2**30) is MemoryMode.FULL
    free["bytes"] = 11 * 2**30
    assert resolve_memory_mode("auto", GPU, full_mode_min_free_bytes=16 * 2**30) is MemoryMode.LOW_VRAM
    assert resolve_memory_mode("full", GPU, full_mode_min_free_bytes=16 * 2**30) is MemoryMode.FULL
    with pytest.raises(InvalidArgument) as error:
        parse_memory_mode("medvram")
    assert error.value.field == "memory_mode"


@pytest.mark.parametrize(
    ("error", "oom"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
        (RuntimeError("HIP out of memory. Tried to allocate 1.50 GiB (GPU 0; 11.98 GiB total capacity)"), True),
        (RuntimeError("HIP error: hipErrorOutOfMemory"), True),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
        (MemoryError(), True),
        (RuntimeError("Expected all tensors to be on the same device"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_classifier(error: BaseException, oom: bool) -> None:
    assert is_out_of_memory(error) is oom


def test_guard_turns_oom_into_advice_and_passes_the_rest() -> None:
    with pytest.raises(ResourceExhausted) as caught, out_of_memory_guard(GPU, MemoryMode.FULL):
        raise torch.OutOfMemoryError("CUDA out of memory")
    message = str(caught.value)
    assert "smaller width and height" in message and "lowvram" in message
    assert caught.value.__cause__ is None  # the failed call's frames (and tensors) are not kept alive
    with pytest.raises(ResourceExhausted) as caught, out_of_memory_guard(GPU, MemoryMode.LOW_VRAM):
        raise RuntimeError("HIP out of memory")
    assert "lowvram" not in str(caught.value)
    with pytest.raises(Cancelled), out_of_memory_guard(CPU):
        raise Cancelled("cancel requested")
    with out_of_memory_guard(CPU):
        pass  # no error, nothing raised


@pytest.mark.parametrize("family", list(ModelFamily))
def test_latent_preview_is_small_and_cheap(family: ModelFamily) -> None:
    latents = torch.randn(2, 4, 128, 96, generator=torch.Generator().manual_seed(0))
    rgb = latents_to_rgb(latents, family)
    assert rgb.shape == (128, 96, 3) and rgb.min() >= 0.0 and rgb.max() <= 1.0
    preview = latent_preview(latents, family)
    assert (preview.width, preview.height) == (96, 128) and preview.data[:4] == b"RIFF"
    big = latent_preview(torch.randn(1, 4, 300, 200), family)
    assert max(big.width, big.height) == 256
    video = latents_to_rgb(torch.randn(1, 4, 8, 16, 16), family)  # AnimateDiff: (B, C, frames, h, w)
    assert video.shape == (16, 16, 3)


def test_callback_returns_its_kwargs_and_counts() -> None:
    class Reporter:
        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def check_cancelled(self) -> None:
            pass

        def progress(self, step: int, total_steps: int, preview=None) -> None:
            self.seen.append((step, total_steps))

    class FakePipe:
        num_timesteps = 3

    reporter = Reporter()
    callback = StepCallback(reporter, "sd15", preview_every=0)
    kwargs = {"latents": torch.zeros(1, 4, 8, 8)}
    for index in range(3):
        assert callback(FakePipe(), index, 999 - index, kwargs) is kwargs
    assert reporter.seen == [(1, 3), (2, 3), (3, 3)] and callback.previews_sent == 0
