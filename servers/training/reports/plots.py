"""The report's charts: small PNGs drawn with matplotlib's Agg canvas (no pyplot, no display, no
global figure state, so safe from worker threads).

Charts (``ReportPlot.name``): "loss" (training and validation loss per epoch), "psnr", "ssim" and
"accuracy" (validation metric per epoch, the degraded inputs' baseline as a dashed line, the best
epoch marked). 640x360 pixels, typically 20-40 KB. The PNGs carry no timestamp or version metadata,
so the same history gives the same bytes with the same matplotlib and fonts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from servers.training.types import EpochMetrics

WIDTH_IN, HEIGHT_IN, DPI = 6.4, 3.6, 100
MARKERS_UP_TO = 40  # epochs; longer runs are drawn as plain lines
LOG_SCALE_RATIO = 20.0  # the loss axis is logarithmic when max/min loss exceeds this
FONT_SIZE = 9  # set per artist, not through rcParams (global state shared by threads)

_TRAIN = "#1f77b4"
_VALIDATION = "#d62728"
_BASELINE = "#7f7f7f"
_BEST = "#2ca02c"


class Plot(NamedTuple):
    """One chart: unpacks as ``(name, title, png)``."""

    name: str
    title: str
    png: bytes


def _new_axes():  # -> (Figure, Axes)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, linewidth=0.5, alpha=0.4)
    ax.tick_params(labelsize=FONT_SIZE)
    ax.set_xlabel("Epoch", fontsize=FONT_SIZE)
    return fig, ax


def _finish(ax, title: str, ylabel: str) -> None:
    ax.set_ylabel(ylabel, fontsize=FONT_SIZE)
    ax.set_title(title, fontsize=FONT_SIZE + 1)
    ax.legend(loc="best", fontsize=FONT_SIZE - 1)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _finite_pairs(xs: Sequence[int], ys: Sequence[float]) -> tuple[list[int], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def loss_plot(history: Sequence[EpochMetrics], best_epoch: int | None = None) -> Plot:
    title = "Training and validation loss per epoch"
    fig, ax = _new_axes()
    epochs = [h.epoch for h in history]
    marker = "o" if len(history) <= MARKERS_UP_TO else None
    values: list[float] = []
    for label, color, series in (
        ("Training loss", _TRAIN, [h.train_loss for h in history]),
        ("Validation loss", _VALIDATION, [h.validation_loss for h in history]),
    ):
        xs, ys = _finite_pairs(epochs, series)
        values += ys
        ax.plot(xs, ys, label=label, color=color, marker=marker, markersize=3, linewidth=1.5)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
    if best_epoch is not None:
        ax.axvline(best_epoch, color=_BEST, linestyle=":", linewidth=1, label=f"Best epoch ({best_epoch})")
    _finish(ax, title, "L1 loss")
    return Plot("loss", title, _png(fig))


def quality_plot(
    history: Sequence[EpochMetrics],
    *,
    name: str,
    title: str,
    ylabel: str,
    value: Callable[[EpochMetrics], tuple[float, float]],
    best_epoch: int | None = None,
) -> Plot:
    """Validation metric per epoch (solid) and the degraded baseline (dashed); ``value`` returns
    (validation, baseline) for a record, already in display units."""
    fig, ax = _new_axes()
    epochs = [h.epoch for h in history]
    marker = "o" if len(history) <= MARKERS_UP_TO else None
    xs, ys = _finite_pairs(epochs, [value(h)[0] for h in history])
    ax.plot(xs, ys, label="Model (validation)", color=_VALIDATION, marker=marker, markersize=3, linewidth=1.5)
    bx, by = _finite_pairs(epochs, [value(h)[1] for h in history])
    if len(bx) == 1:  # a single epoch: still show the baseline as a line
        ax.axhline(by[0], color=_BASELINE, linestyle="--", linewidth=1.2, label="Degraded input (baseline)")
    else:
        ax.plot(bx, by, color=_BASELINE, linestyle="--", linewidth=1.2, label="Degraded input (baseline)")
    if best_epoch is not None:
        best = next((h for h in history if h.epoch == best_epoch), None)
        if best is not None and math.isfinite(value(best)[0]):
            ax.plot([best_epoch], [value(best)[0]], marker="*", markersize=11, color=_BEST, linestyle="none")
            ax.axvline(best_epoch, color=_BEST, linestyle=":", linewidth=1, label=f"Best epoch ({best_epoch})")
    _finish(ax, title, ylabel)
    return Plot(name, title, _png(fig))


# The quality charts after the loss chart: (name, title, y label, display scale) of each metric.
QUALITY_CHARTS = (
    ("psnr", "Validation PSNR per epoch", "PSNR (dB)", 1.0),
    ("ssim", "Validation SSIM per epoch", "SSIM", 1.0),
    ("accuracy", "Validation accuracy per epoch (pixels within 0.02)", "Accuracy (%)", 100.0),
)


def render_plots(history: Sequence[EpochMetrics], best_epoch: int | None = None) -> list[Plot]:
    """The four charts of a report, in the order loss, psnr, ssim, accuracy; none without history."""
    if not history:
        return []
    return [
        loss_plot(history, best_epoch),
        *(
            quality_plot(
                history,
                name=name,
                title=title,
                ylabel=ylabel,
                value=lambda h, name=name, scale=scale: (
                    getattr(h.validation, name) * scale,
                    getattr(h.baseline, name) * scale,
                ),
                best_epoch=best_epoch,
            )
            for name, title, ylabel, scale in QUALITY_CHARTS
        ),
    ]
