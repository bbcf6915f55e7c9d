"""Restoring an image with a model, whole or tile by tile.

Tiles are squares of ``tile_size`` placed every ``tile_size - overlap`` pixels, the last row and
column moved back to end exactly at the image's edge. Each tile's output is weighted by a window
that is 1 inside and ramps linearly over ``overlap`` pixels on every side that has a neighbour
(never on the image's own edges); the image is the weighted sum divided by the summed weights, so
neighbouring tiles cross-fade and no seams show. The full-size accumulators stay on the CPU; only
one tile at a time is on the model's device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from genmesh.errors import InvalidArgument, ResourceExhausted
from servers.compute.memory import free_device_memory, is_out_of_memory

TileCallback = Callable[[int, int], None]
CancelCheck = Callable[[], None]

MIN_TILE = 8


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap``
    pixels shared by neighbours; the last tile ends at ``length``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(size: int, overlap: int, before: bool, after: bool) -> torch.Tensor:
    """1-D window: 1, ramping over ``overlap`` pixels at the ends that have a neighbour."""
    window = torch.ones(size, dtype=torch.float32)
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap  # never 0: every pixel counts
        if before:
            window[:overlap] = torch.minimum(window[:overlap], ramp)
        if after:
            window[-overlap:] = torch.minimum(window[-overlap:], ramp.flip(0))
    return window


def count_tiles(height: int, width: int, tile_size: int | None, overlap: int) -> int:
    """How many tiles ``restore_image`` runs for an image of this size."""
    if not tile_size:
        return 1
    return len(tile_starts(height, tile_size, overlap)) * len(tile_starts(width, tile_size, overlap))


def validate_tiling(tile_size: int | None, overlap: int) -> None:
    if tile_size and tile_size < MIN_TILE:
        raise InvalidArgument(
            f"tile_size must be 0 (whole image) or at least {MIN_TILE} (got {tile_size})", field="tile_size"
        )
    if tile_size and not (0 <= overlap <= tile_size // 2):
        raise InvalidArgument(
            f"tile_overlap must be between 0 and tile_size/2 = {tile_size // 2} (got {overlap})", field="tile_overlap"
        )
    if overlap < 0:
        raise InvalidArgument(f"tile_overlap must be at least 0 (got {overlap})", field="tile_overlap")


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def restore_image(
    model: nn.Module,
    image: torch.Tensor,
    tile_size: int | None = None,
    overlap: int = 32,
    on_tile: TileCallback | None = None,
    check_cancelled: CancelCheck | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """Run ``model`` over ``image`` ((3, H, W) or (1, 3, H, W), values in [0, 1], any device).

    ``tile_size`` None or 0 runs the whole image at once; otherwise tiles of that side overlapping
    by ``overlap`` pixels (0..tile_size/2). ``on_tile(done, total)`` is called after every tile and
    ``check_cancelled()`` (which raises ``Cancelled``) before each. ``amp`` runs the model under
    bf16/fp16 autocast on a GPU (ignored on the CPU). Returns a float32 CPU tensor of the input's
    shape, clamped to [0, 1]. Out of device memory raises ``ResourceExhausted`` advising smaller
    tiles. The model runs in eval mode without autograd; its previous mode is restored.
    """
    validate_tiling(tile_size, overlap)
    batched = image.ndim == 4
    if batched:
        if image.shape[0] != 1:
            raise InvalidArgument(f"restore_image takes one image, got a batch of {image.shape[0]}", field="image")
        image = image[0]
    if image.ndim != 3 or image.shape[-1] < 1 or image.shape[-2] < 1:
        raise InvalidArgument(f"expected a (C, H, W) image, got shape {tuple(image.shape)}", field="image")

    source = image.detach().float().cpu()
    _, height, width = source.shape
    device = _model_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: the result must be an ordinary tensor for callers
            if not tile_size:
                if check_cancelled:
                    check_cancelled()
                result = _run(model, source.unsqueeze(0), device, amp)[0]
                if on_tile:
                    on_tile(1, 1)
            else:
                result = _run_tiled(model, source, device, tile_size, overlap, on_tile, check_cancelled, amp)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_device_memory(device)
        raise ResourceExhausted(
            f"out of device memory restoring a {width}x{height} image"
            + (f" in {tile_size}-pixel tiles" if tile_size else " whole")
            + ": use a smaller tile_size"
        ) from None
    finally:
        model.train(was_training)
    result = result.clamp_(0.0, 1.0)
    return result.unsqueeze(0) if batched else result


def _run(model: nn.Module, batch: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    with _autocast(device, amp):
        out = model(batch.to(device, non_blocking=True))
    return out.float().cpu()


def _run_tiled(
    model: nn.Module,
    source: torch.Tensor,
    device: torch.device,
    tile_size: int,
    overlap: int,
    on_tile: TileCallback | None,
    check_cancelled: CancelCheck | None,
    amp: bool,
) -> torch.Tensor:
    _, height, width = source.shape
    rows = tile_starts(height, tile_size, overlap)
    cols = tile_starts(width, tile_size, overlap)
    total = len(rows) * len(cols)
    accum: torch.Tensor | None = None
    weights = torch.zeros(height, width, dtype=torch.float32)
    done = 0
    for i, top in enumerate(rows):
        tile_h = min(tile_size, height)
        row_window = _ramp(tile_h, overlap, before=i > 0, after=i < len(rows) - 1)
        for j, left in enumerate(cols):
            if check_cancelled:
                check_cancelled()
            tile_w = min(tile_size, width)
            col_window = _ramp(tile_w, overlap, before=j > 0, after=j < len(cols) - 1)
            window = row_window[:, None] * col_window[None, :]
            tile = source[:, top : top + tile_h, left : left + tile_w]
            out = _run(model, tile.unsqueeze(0), device, amp)[0]
            if accum is None:
                accum = torch.zeros(out.shape[0], height, width, dtype=torch.float32)
            accum[:, top : top + tile_h, left : left + tile_w] += out * window
            weights[top : top + tile_h, left : left + tile_w] += window
            done += 1
            if on_tile:
                on_tile(done, total)
    assert accum is not None  # at least one tile always runs
    return accum.div_(weights)
