"""Image quality metrics against a clean reference, as the training proto's ``QualityMetrics``
defines them. Pure functions on float tensors with values in [0, 1], shaped (N, 3, H, W) or
(3, H, W); no border crop, no colour conversion (RGB as given).

- ``psnr``: peak signal-to-noise ratio in dB with peak 1.0, the mean squared error taken over all
  channels and pixels of an image; identical images (and anything above 100 dB) count as 100.
- ``ssim``: structural similarity (Wang et al. 2004) with an 11x11 Gaussian window, sigma 1.5,
  K1 = 0.01, K2 = 0.03, data range 1, computed per RGB channel over the window positions fully
  inside the image and averaged; the same as scikit-image's ``structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)``. Range [-1, 1].
  Images smaller than 11 pixels a side use the largest odd window that fits.
- ``accuracy``: share of pixels, in [0, 1], within ``tolerance`` (default 0.02, about 5/255) of
  the reference on every channel.

Each metric has a ``*_per_image`` form returning an (N,) float64 tensor and a plain form returning
the mean over the batch as a Python float. ``quality`` computes all three at once, as a
``servers.training.types.Quality``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genmesh.errors import InvalidArgument
from servers.training.types import Quality

PSNR_IDENTICAL = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
ACCURACY_TOLERANCE = 0.02


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise InvalidArgument(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}", field="image")
    if a.ndim == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.ndim != 4 or a.shape[0] == 0 or a.shape[-1] == 0 or a.shape[-2] == 0:
        raise InvalidArgument(f"expected (N, C, H, W) or (C, H, W) images, got shape {tuple(a.shape)}", field="image")
    # float32 keeps the SSIM moments within 1e-6 of float64 for values in [0, 1] and runs fast on
    # any device; half-precision inputs (autocast outputs) are promoted.
    return a.float(), b.to(device=a.device, dtype=torch.float32)


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image of ``a`` against ``b`` (peak 1.0), capped at 100 (identical)."""
    a, b = _pair(a, b)
    mse = (a - b).square().flatten(1).mean(dim=1).double()
    value = 10.0 * torch.log10(1.0 / mse)  # inf where mse == 0
    return value.clamp(max=PSNR_IDENTICAL)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each image of ``a`` against ``b`` (channels averaged), float64 (N,)."""
    a, b = _pair(a, b)
    _, c, h, w = a.shape
    size = min(SSIM_WINDOW, h - (1 - h % 2), w - (1 - w % 2))  # largest odd size that fits
    g = _gaussian_window(size, SSIM_SIGMA, a.device)
    # The separable Gaussian as two depthwise passes over the 5 moment maps at once.
    maps = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    maps = F.conv2d(maps, g.view(1, 1, size, 1).expand(5 * c, 1, size, 1), groups=5 * c)
    maps = F.conv2d(maps, g.view(1, 1, 1, size).expand(5 * c, 1, 1, size), groups=5 * c)
    mu_a, mu_b, e_aa, e_bb, e_ab = maps.split(c, dim=1)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return s.flatten(1).double().mean(dim=1)


def accuracy_per_image(a: torch.Tensor, b: torch.Tensor, tolerance: float = ACCURACY_TOLERANCE) -> torch.Tensor:
    """Share of each image's pixels within ``tolerance`` of ``b`` on every channel, float64 (N,)."""
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise InvalidArgument(f"tolerance must be a finite number >= 0 (got {tolerance})", field="tolerance")
    a, b = _pair(a, b)
    close = ((a - b).abs() <= tolerance).all(dim=1)
    return close.flatten(1).double().mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) over the batch; see ``psnr_per_image``."""
    return float(psnr_per_image(a, b).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM over the batch; see ``ssim_per_image``."""
    return float(ssim_per_image(a, b).mean())


def accuracy(a: torch.Tensor, b: torch.Tensor, tolerance: float = ACCURACY_TOLERANCE) -> float:
    """Mean accuracy over the batch; see ``accuracy_per_image``."""
    return float(accuracy_per_image(a, b, tolerance).mean())


def quality_per_image(a: torch.Tensor, b: torch.Tensor) -> list[Quality]:
    """All three metrics for each image of ``a`` against ``b``."""
    values = zip(
        psnr_per_image(a, b).tolist(), ssim_per_image(a, b).tolist(), accuracy_per_image(a, b).tolist(), strict=True
    )
    return [Quality(p, s, acc) for p, s, acc in values]


def quality(a: torch.Tensor, b: torch.Tensor) -> Quality:
    """All three metrics, each the mean over the batch."""
    return mean_quality(quality_per_image(a, b))


def mean_quality(items: list[Quality]) -> Quality:
    """The mean of per-image metrics (how the proto averages over a set of images)."""
    if not items:
        raise InvalidArgument("no images to average metrics over", field="images")
    count = len(items)
    return Quality(
        psnr=sum(q.psnr for q in items) / count,
        ssim=sum(q.ssim for q in items) / count,
        accuracy=sum(q.accuracy for q in items) / count,
    )
