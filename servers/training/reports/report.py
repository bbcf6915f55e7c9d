"""The training report: plain text for people, the same data as JSON, and charts.

``build_report(inp)`` is pure (no I/O); ``save_report(store, report)`` uploads it to
``training-outputs``: the charts under ``analysis/<job_id>/<name>.png``, then
``reports/<job_id>/report.json`` and, last, ``reports/<job_id>/report.txt`` (so a report whose text
exists is complete).

Text sections, in order: JOB, PARAMETERS, DATA, METRICS PER EPOCH, TOTAL IMPROVEMENT, MODEL,
COMPARISON WITH THE PREVIOUS MODEL, ENVIRONMENT, RECOMMENDATIONS. JSON top-level keys (those of
``TrainingReport.data``): job, parameters, data, epochs, improvement, model, comparison,
environment, recommendations. NaN and infinite numbers become null in the JSON and "n/a" in the text.

Why this module is long: it is the whole report layout. Each of the nine sections is one function
that builds its text lines and its JSON together, so the two forms cannot drift apart; splitting
them over modules would only scatter one format. The inputs are ``reports.inputs`` over
``servers.training.types``, the rules ``reports.recommendations``, the charts ``reports.plots``.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from servers.training.reports.inputs import ReportInput, as_utc
from servers.training.reports.plots import Plot, render_plots
from servers.training.reports.recommendations import (
    DEFAULT_THRESHOLDS,
    Recommendation,
    Thresholds,
    recommend,
)
from servers.training.types import DEFAULT_ARCHITECTURE, EpochMetrics, Quality, finite

if TYPE_CHECKING:
    from storage.object_store import ObjectStore, StoredObject

WIDTH = 80
MAX_TABLE_ROWS = 40  # longer histories show the first/last epochs, the best one and a sample between
SSIM_TOLERANCE = 0.005  # |SSIM delta| at most this counts as "about the same"
OPTIMIZER = "AdamW"
LR_SCHEDULE = "cosine annealing"
LOSS = "L1 on pixel values in [0, 1]"
EFFECTIVENESS_DEFINITION = (
    "pairs used / clean files (complete pairs found if no clean file was counted), "
    "the share of the data that went into training"
)


@dataclass(frozen=True)
class Report:
    """``text`` and ``json`` hold the same data; ``plots`` are (name, title, png) tuples."""

    job_id: str
    text: str
    json: dict[str, Any]
    plots: list[Plot] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    created: datetime | None = None

    def text_bytes(self) -> bytes:
        return self.text.encode("utf-8")

    def json_bytes(self) -> bytes:
        return json.dumps(self.json, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")


# -- formatting ------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _when(value: datetime | None) -> str:
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "n/a"


def duration_text(seconds: float | None) -> str:
    """``4 minutes 56 seconds``, ``1 hour 0 minutes 5 seconds``, ``42.5 seconds``."""
    if seconds is None or not finite(seconds) or seconds < 0:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} seconds"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)

    def unit(n: int, name: str) -> str:
        return f"{n} {name}{'' if n == 1 else 's'}"

    parts = ([unit(hours, "hour")] if hours else []) + [unit(minutes, "minute"), unit(secs, "second")]
    return " ".join(parts)


def size_text(size: int | None) -> str:
    """Binary units: ``100.21 KiB``, ``98.40 MiB``."""
    if not size or size < 0:
        return "n/a"
    value = float(size)
    for name in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or name == "GiB":
            return f"{size} bytes" if name == "bytes" else f"{value:.2f} {name}"
        value /= 1024
    return f"{value:.2f} GiB"  # pragma: no cover


def _wrap(line: str, indent: str = "    ") -> str:
    """Fold a long line at WIDTH; continuation lines are indented. Never splits a word or number."""
    return textwrap.fill(line, WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def _num(value: Any, spec: str) -> str:
    return format(value, spec) if finite(value) else "n/a"


def _pct(share: Any, digits: int = 1) -> str:
    return f"{share * 100:.{digits}f}%" if finite(share) else "n/a"


def _signed(value: Any, spec: str) -> str:
    return format(value, "+" + spec) if finite(value) else "n/a"


def _rel(first: Any, last: Any) -> float | None:
    if not (finite(first) and finite(last)) or first == 0:
        return None
    return (last - first) / abs(first)


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, datetimes -> ISO strings, tuples -> lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_clean(v) for v in value]
    return str(value)


# -- spec normalisation ----------------------------------------------------------------------------

_SPEC_ORDER = (
    "num_epochs",
    "batch_size",
    "learning_rate",
    "patch_size",
    "validation_split",
    "seed",
    "architecture",
    "max_pairs",
    "dataset_prefix",
)
_SPEC_SKIP = {"layer", "description"}  # reported in the JOB section


def _int_or(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def architecture_name(value: Any) -> str:
    """ "ARCHITECTURE_SMALL", "small" -> "small"; unspecified (0, "", "ARCHITECTURE_UNSPECIFIED") -> the
    default preset. The presets themselves are ``servers.training.model.restormer.ARCHITECTURES``."""
    text = str(value or "").strip().removeprefix("ARCHITECTURE_").lower()
    return DEFAULT_ARCHITECTURE if text in ("", "0", "unspecified") else text


def normalize_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _SPEC_ORDER:
        value = spec.get(key)
        if key in ("num_epochs", "batch_size", "patch_size", "seed", "max_pairs"):
            value = _int_or(value) if value is not None else None
        elif key in ("learning_rate", "validation_split"):
            value = float(value) if value is not None else None
        elif key == "architecture":
            value = architecture_name(value)
        elif key == "dataset_prefix":
            value = str(value or "")
        out[key] = value
    for key, value in spec.items():
        if key not in out and key not in _SPEC_SKIP:
            out[key] = value
    return out


# -- sections --------------------------------------------------------------------------------------


def _job_section(inp: ReportInput, report_time: datetime | None) -> tuple[list[str], dict[str, Any]]:
    t = inp.timings
    started, ended, created = as_utc(t.started), as_utc(t.ended), as_utc(t.created)
    total = t.total_seconds
    if total is None and started and ended:
        total = (ended - started).total_seconds()
    queued = (started - created).total_seconds() if started and created else None
    epoch_times = [h.epoch_seconds for h in inp.history if finite(h.epoch_seconds)]
    mean_epoch = sum(epoch_times) / len(epoch_times) if epoch_times else None
    done = inp.history[-1].epoch if inp.history else 0
    planned = inp.planned_epochs()
    data = {
        "job_id": inp.job_id,
        "layer": inp.layer,
        "description": inp.description,
        "status": inp.status,
        "error": inp.error_message or None,
        "created_at": created,
        "started_at": started,
        "ended_at": ended,
        "queued_seconds": queued,
        "duration_seconds": total,
        "duration_text": duration_text(total),
        "epochs_completed": done,
        "epochs_planned": planned,
        "mean_epoch_seconds": mean_epoch,
        "min_epoch_seconds": min(epoch_times) if epoch_times else None,
        "max_epoch_seconds": max(epoch_times) if epoch_times else None,
        "resumed_count": inp.resumed_count,
        "resumed_from_job_id": inp.resumed_from_job_id or None,
        "report_created_at": report_time,
    }
    lines = ["JOB", f"Job ID: {inp.job_id}", f"Layer: {inp.layer}"]
    if inp.description:
        lines.append(f"Description: {inp.description}")
    lines.append(f"Status: {inp.status.upper()}")
    if inp.error_message:
        lines.append(f"Error: {inp.error_message}")
    lines += [
        f"Created: {_when(created)}",
        f"Started: {_when(started)}",
        f"Ended: {_when(ended)}",
    ]
    if queued is not None:
        lines.append(f"Waited in queue: {duration_text(queued)}")
    lines.append(f"Duration: {duration_text(total)}")
    lines.append(f"Epochs completed: {done}" + (f" of {planned}" if planned else ""))
    if mean_epoch is not None:
        lines.append(
            f"Time per epoch: {mean_epoch:.1f} s on average "
            f"(fastest {min(epoch_times):.1f} s, slowest {max(epoch_times):.1f} s)"
        )
    resumed = f"Resumed from checkpoint: {inp.resumed_count} time{'' if inp.resumed_count == 1 else 's'}"
    if inp.resumed_from_job_id:
        resumed += f" (continues job {inp.resumed_from_job_id})"
    lines.append(resumed)
    return lines, data


def _parameters_section(inp: ReportInput) -> tuple[list[str], dict[str, Any]]:
    spec = normalize_spec(inp.spec)
    final_lr = inp.history[-1].learning_rate if inp.history else None
    data = {**spec, "optimizer": OPTIMIZER, "lr_schedule": LR_SCHEDULE, "loss": LOSS, "final_learning_rate": final_lr}

    def show(key: str) -> str:
        value = spec.get(key)
        if key == "max_pairs":
            return str(value) if value else "all"
        if value is None:
            return "n/a"
        if key == "learning_rate":
            return f"{value:g}"
        if key == "validation_split":
            return f"{value:g} ({value:.0%} of the pairs held out)"
        if key == "patch_size":
            return f"{value} px"
        if key == "dataset_prefix":
            return f'"{value}"' + ("" if value else " (every pair)")
        return str(value)

    lines = [
        "PARAMETERS",
        f"Epochs: {show('num_epochs')}",
        f"Batch size: {show('batch_size')}",
        f"Learning rate: {show('learning_rate')} (initial; {LR_SCHEDULE}"
        + (f", {final_lr:.3g} at the last epoch)" if finite(final_lr) else ")"),
        f"Optimizer: {OPTIMIZER}",
        f"Loss: {LOSS}",
        f"Patch size: {show('patch_size')}",
        f"Validation split: {show('validation_split')}",
        f"Seed: {show('seed')}",
        f"Architecture: {show('architecture')}",
        f"Max pairs: {show('max_pairs')}",
        f"Dataset prefix: {show('dataset_prefix')}",
    ]
    for key, value in spec.items():
        if key not in _SPEC_ORDER:
            lines.append(f"{key}: {value}")
    return lines, data


def _data_section(inp: ReportInput) -> tuple[list[str], dict[str, Any]]:
    d = inp.dataset
    share = d.effectiveness()
    denominator_name, denominator = d.effectiveness_denominator()
    data = {
        "clean_files": d.clean_files,
        "degraded_files": d.degraded_files,
        "total_files": d.clean_files + d.degraded_files,
        "pairs_found": d.pairs_found,
        "pairs_used": d.pairs_used,
        "skipped_pairs": d.skipped_pairs,
        "train_pairs": d.train_pairs,
        "validation_pairs": d.validation_pairs,
        "effectiveness_percent": round(share * 100, 1) if share is not None else None,
        "effectiveness_definition": EFFECTIVENESS_DEFINITION,
    }
    effectiveness = (
        f"{share:.1%} ({d.pairs_used} pairs used of {denominator} {denominator_name})" if share is not None else "n/a"
    )
    lines = [
        "DATA",
        f"Total files found: {d.clean_files + d.degraded_files}",
        f"Clean files: {d.clean_files}",
        f"Degraded files: {d.degraded_files}",
        f"Complete pairs found: {d.pairs_found}",
        f"Pairs used: {d.pairs_used} (training {d.train_pairs}, validation {d.validation_pairs})",
        f"Pairs skipped: {d.skipped_pairs} (unreadable, mismatched sizes or smaller than the patch)",
        f"Data effectiveness: {effectiveness}",
        _wrap(f"  (data effectiveness = {EFFECTIVENESS_DEFINITION})", indent="   "),
    ]
    return lines, data


def _table_rows(history: Sequence[EpochMetrics], best_epoch: int | None) -> list[EpochMetrics | None]:
    """Rows to show; None marks a gap. Every row when the history is short."""
    n = len(history)
    if n <= MAX_TABLE_ROWS:
        return list(history)
    keep = set(range(10)) | set(range(n - 10, n))
    step = math.ceil(n / (MAX_TABLE_ROWS - 20))
    keep |= set(range(0, n, step))
    keep |= {i for i, h in enumerate(history) if h.epoch == best_epoch}
    rows: list[EpochMetrics | None] = []
    previous = -1
    for i in sorted(keep):
        if i != previous + 1:
            rows.append(None)
        rows.append(history[i])
        previous = i
    return rows


def _epochs_section(inp: ReportInput, best: EpochMetrics | None) -> tuple[list[str], list[dict[str, Any]]]:
    best_epoch = best.epoch if best else None
    data = [
        {
            "epoch": h.epoch,
            "train_loss": h.train_loss,
            "validation_loss": h.validation_loss,
            "validation": h.validation.to_dict(),
            "baseline": h.baseline.to_dict(),
            "learning_rate": h.learning_rate,
            "epoch_seconds": h.epoch_seconds,
            "best": h.epoch == best_epoch,
        }
        for h in inp.history
    ]
    lines = ["METRICS PER EPOCH"]
    if not inp.history:
        lines.append("No epoch completed.")
        return lines, data
    header = (
        f"{'Epoch':>6} {'Train loss':>10} {'Val loss':>9} {'PSNR dB':>8} {'SSIM':>6} {'Accuracy':>9} "
        f"{'LR':>9} {'Time s':>7}"
    )
    lines += [
        "Train loss on the training split; the other columns on the validation split.",
        header,
        "-" * len(header),
    ]
    shown = 0
    for row in _table_rows(inp.history, best_epoch):
        if row is None:
            lines.append(f"{'...':>6}")
            continue
        shown += 1
        mark = "*" if row.epoch == best_epoch else " "
        lines.append(
            f"{row.epoch:>5}{mark} {_num(row.train_loss, '.4f'):>10} {_num(row.validation_loss, '.4f'):>9} "
            f"{_num(row.validation.psnr, '.2f'):>8} {_num(row.validation.ssim, '.3f'):>6} "
            f"{_pct(row.validation.accuracy):>9} {_num(row.learning_rate, '.2e'):>9} "
            f"{_num(row.epoch_seconds, '.1f'):>7}"
        )
    if shown < len(inp.history):
        lines.append(f"({len(inp.history) - shown} epochs not shown; the JSON report lists every epoch)")
    if best is not None:
        lines.append(f"* best epoch ({best.epoch}): highest validation PSNR; its weights are the model's")
    baseline = inp.history[-1].baseline
    lines.append(
        f"Baseline (degraded inputs vs clean): PSNR {_num(baseline.psnr, '.2f')} dB, "
        f"SSIM {_num(baseline.ssim, '.3f')}, Accuracy {_pct(baseline.accuracy)}"
    )
    return lines, data


def _metric_change(first: float, last: float) -> dict[str, Any]:
    change = last - first if finite(first) and finite(last) else None
    rel = _rel(first, last)
    return {
        "first": first,
        "last": last,
        "change": change,
        "change_percent": round(rel * 100, 2) if rel is not None else None,
    }


def _improvement_section(inp: ReportInput, best: EpochMetrics | None) -> tuple[list[str], dict[str, Any]]:
    lines = ["TOTAL IMPROVEMENT"]
    if best is None or not inp.history:
        lines.append("No epoch completed.")
        return lines, {}
    first, last = inp.history[0], inp.history[-1]
    baseline = last.baseline
    best_gain = best.validation.minus(baseline)
    final_gain = last.validation.minus(baseline)

    def gains(q: Quality) -> dict[str, float]:
        return {"psnr_db": q.psnr, "ssim": q.ssim, "accuracy": q.accuracy}

    data = {
        "best_epoch": best.epoch,
        "final_epoch": last.epoch,
        "baseline": baseline.to_dict(),
        "best": {**best.validation.to_dict(), "validation_loss": best.validation_loss},
        "final": {**last.validation.to_dict(), "validation_loss": last.validation_loss},
        "best_vs_baseline": gains(best_gain),
        "final_vs_baseline": gains(final_gain),
        "first_to_last": {
            "first_epoch": first.epoch,
            "last_epoch": last.epoch,
            "train_loss": _metric_change(first.train_loss, last.train_loss),
            "validation_loss": _metric_change(first.validation_loss, last.validation_loss),
            "psnr": _metric_change(first.validation.psnr, last.validation.psnr),
            "ssim": _metric_change(first.validation.ssim, last.validation.ssim),
            "accuracy": _metric_change(first.validation.accuracy, last.validation.accuracy),
        },
    }

    def vs_baseline(label: str, q: Quality, gain: Quality) -> list[str]:
        return [
            label,
            f"- PSNR: {_num(baseline.psnr, '.2f')} -> {_num(q.psnr, '.2f')} dB ({_signed(gain.psnr, '.2f')} dB)",
            f"- SSIM: {_num(baseline.ssim, '.3f')} -> {_num(q.ssim, '.3f')} ({_signed(gain.ssim, '.3f')})",
            f"- Accuracy: {_pct(baseline.accuracy)} -> {_pct(q.accuracy)} "
            f"({_signed(gain.accuracy * 100, '.1f')} points)",
        ]

    def change(label: str, a: float, b: float, spec: str, unit: str = "") -> str:
        rel = _rel(a, b)
        rel_text = f", {rel * 100:+.1f}%" if rel is not None else ""
        diff = b - a if finite(a) and finite(b) else None
        return f"- {label}: {_num(a, spec)} -> {_num(b, spec)}{unit} ({_signed(diff, spec)}{unit}{rel_text})"

    lines += vs_baseline(f"Best epoch ({best.epoch}) vs the degraded inputs (baseline):", best.validation, best_gain)
    if last.epoch != best.epoch:
        lines += vs_baseline(f"Last epoch ({last.epoch}) vs the degraded inputs:", last.validation, final_gain)
    lines += [
        f"Epoch {first.epoch} -> epoch {last.epoch}:",
        change("Training loss", first.train_loss, last.train_loss, ".4f"),
        change("Validation loss", first.validation_loss, last.validation_loss, ".4f"),
        change("PSNR", first.validation.psnr, last.validation.psnr, ".2f", " dB"),
        change("SSIM", first.validation.ssim, last.validation.ssim, ".3f"),
        f"- Accuracy: {_pct(first.validation.accuracy)} -> {_pct(last.validation.accuracy)} "
        f"({_signed((last.validation.accuracy - first.validation.accuracy) * 100, '.1f')} points)",
    ]
    return lines, data


def _model_section(inp: ReportInput, best: EpochMetrics | None) -> tuple[list[str], dict[str, Any]]:
    m = inp.model
    registered = bool(m and m.model_id)
    data: dict[str, Any] = {
        "registered": registered,
        "model_id": m.model_id if m and m.model_id else None,
        "bucket": m.bucket if registered and m else None,
        "key": m.key if m and m.key else None,
        "architecture": architecture_name(m.architecture) if m else architecture_name(inp.spec.get("architecture")),
        "parameter_count": m.parameter_count if m else None,
        "size_bytes": m.size_bytes if m and m.size_bytes else None,
        "best_epoch": best.epoch if best else None,
    }
    lines = ["MODEL"]
    if registered and m:
        lines.append(f"Model ID: {m.model_id}")
        if m.key:
            lines.append(f"Stored at: {m.bucket}/{m.key}")
    else:
        why = {"cancelled": "the job was cancelled", "failed": "the job failed"}.get(inp.status, "not registered")
        lines.append(f"Model: not registered ({why}); the last checkpoint is kept for resuming")
    lines.append(f"Architecture: Restormer-style, {data['architecture']}")
    if m:
        lines.append(f"Parameters: {m.parameter_count:,}")
        lines.append(f"Size: {size_text(m.size_bytes)}")
    if best:
        lines.append(f"Weights from: epoch {best.epoch} (highest validation PSNR)")
    return lines, data


def _comparison_section(inp: ReportInput, best: EpochMetrics | None, t: Thresholds) -> tuple[list[str], dict[str, Any]]:
    prev = inp.previous
    title = f"COMPARISON WITH THE PREVIOUS MODEL OF LAYER {inp.layer}"
    if prev is None:
        return (
            [title, f"No previous model of layer {inp.layer}: this is its first model."],
            {"previous_model_id": None, "verdict": "first_model"},
        )
    if best is None:
        return [title, f"Previous model: {prev.model_id}", "No epoch completed: nothing to compare."], {
            "previous_model_id": prev.model_id,
            "verdict": "not_compared",
        }
    current = best.validation
    delta = current.minus(prev.metrics)
    loss_delta = (
        best.validation_loss - prev.validation_loss
        if prev.validation_loss is not None and finite(prev.validation_loss) and finite(best.validation_loss)
        else None
    )
    tol = t.comparison_tolerance_db
    if abs(delta.psnr) <= tol and abs(delta.ssim) <= SSIM_TOLERANCE:
        verdict = "similar"
    elif delta.psnr > tol and delta.ssim >= -SSIM_TOLERANCE:
        verdict = "better"
    elif delta.psnr < -tol and delta.ssim <= SSIM_TOLERANCE:
        verdict = "worse"
    else:
        verdict = "mixed"
    data = {
        "previous_model_id": prev.model_id,
        "previous_job_id": prev.job_id or None,
        "previous_created_at": as_utc(prev.created),
        "previous": {**prev.metrics.to_dict(), "validation_loss": prev.validation_loss},
        "current": {**current.to_dict(), "validation_loss": best.validation_loss},
        "delta": {
            "psnr": delta.psnr,
            "ssim": delta.ssim,
            "accuracy": delta.accuracy,
            "validation_loss": loss_delta,
        },
        "verdict": verdict,
        "note": "positive PSNR/SSIM/accuracy deltas and negative loss deltas are improvements; "
        "the validation sets may differ between the two models",
    }

    def judge(diff: float | None, tolerance: float, lower_is_better: bool = False) -> str:
        if diff is None or not finite(diff):
            return "n/a"
        if abs(diff) <= tolerance:
            return "about the same"
        return "better" if (diff < 0) == lower_is_better else "worse"

    lines = [title, f"Previous model: {prev.model_id}" + (f" (job {prev.job_id})" if prev.job_id else "")]
    if prev.key:
        lines.append(f"Stored at: {prev.key}")
    lines += [
        f"- PSNR: {_num(prev.metrics.psnr, '.2f')} -> {_num(current.psnr, '.2f')} dB "
        f"({_signed(delta.psnr, '.2f')} dB, {judge(delta.psnr, tol)})",
        f"- SSIM: {_num(prev.metrics.ssim, '.3f')} -> {_num(current.ssim, '.3f')} "
        f"({_signed(delta.ssim, '.3f')}, {judge(delta.ssim, SSIM_TOLERANCE)})",
        f"- Accuracy: {_pct(prev.metrics.accuracy)} -> {_pct(current.accuracy)} "
        f"({_signed(delta.accuracy * 100, '.1f')} points, {judge(delta.accuracy, 0.001)})",
    ]
    if loss_delta is not None:
        lines.append(
            f"- Validation loss: {_num(prev.validation_loss, '.4f')} -> {_num(best.validation_loss, '.4f')} "
            f"({_signed(loss_delta, '.4f')}, {judge(loss_delta, 1e-4, lower_is_better=True)})"
        )
    lines.append(f"Overall: {verdict} (the validation sets may differ between the two models)")
    return lines, data


def _environment_section(inp: ReportInput) -> tuple[list[str], dict[str, Any]]:
    env = inp.environment
    data = {
        "python": env.python or None,
        "torch": env.torch or None,
        "device": env.device or None,
        "device_name": env.device_name or None,
        "accelerated": env.accelerated,
        "peak_memory_bytes": env.peak_memory_bytes or None,
        **{str(k): v for k, v in env.extra.items()},
    }
    device = env.device or "n/a"
    if env.device_name:
        device += f" ({env.device_name})"
    memory_kind = "device" if env.accelerated else "process"
    lines = [
        "ENVIRONMENT",
        f"Python: {env.python or 'n/a'}",
        f"PyTorch: {env.torch or 'n/a'}",
        f"Device: {device}",
        f"GPU used: {'yes' if env.accelerated else 'no'}",
        f"Peak {memory_kind} memory: {size_text(env.peak_memory_bytes)}",
    ]
    lines += [f"{k}: {v}" for k, v in env.extra.items()]
    return lines, data


# -- the report ------------------------------------------------------------------------------------


def build_report(
    inp: ReportInput,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    with_plots: bool = True,
) -> Report:
    """The report of one training job. Pure: no I/O (``with_plots=False`` skips matplotlib)."""
    best = inp.best_record()
    created = as_utc(inp.generated_at) or as_utc(inp.timings.ended) or datetime.now(UTC)
    recommendations = recommend(inp, thresholds)

    job_lines, job = _job_section(inp, created)
    param_lines, parameters = _parameters_section(inp)
    data_lines, data = _data_section(inp)
    epoch_lines, epochs = _epochs_section(inp, best)
    improvement_lines, improvement = _improvement_section(inp, best)
    model_lines, model = _model_section(inp, best)
    comparison_lines, comparison = _comparison_section(inp, best, thresholds)
    env_lines, environment = _environment_section(inp)
    rec_lines = ["RECOMMENDATIONS"] + ([_wrap(r.line()) for r in recommendations] or ["None."])

    rule = "=" * WIDTH
    sections = [
        job_lines,
        param_lines,
        data_lines,
        epoch_lines,
        improvement_lines,
        model_lines,
        comparison_lines,
        env_lines,
        rec_lines,
    ]
    body = "\n\n".join("\n".join(section) for section in sections)
    text = "\n".join(
        [
            rule,
            f"TRAINING REPORT - LAYER {inp.layer}".center(WIDTH).rstrip(),
            rule,
            "",
            body,
            "",
            rule,
            f"Report generated automatically on {_when(created)}",
            rule,
            "",
        ]
    )
    report_json = _clean(
        {
            "job": job,
            "parameters": parameters,
            "data": data,
            "epochs": epochs,
            "improvement": improvement,
            "model": model,
            "comparison": comparison,
            "environment": environment,
            "recommendations": [r.to_dict() for r in recommendations],
        }
    )
    plots = render_plots(inp.history, best.epoch if best else None) if with_plots else []
    return Report(inp.job_id, text, report_json, plots, recommendations, created)


# -- storage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedReport:
    text: StoredObject
    json: StoredObject
    plots: list[tuple[str, str, StoredObject]]  # (name, title, stored PNG)


def report_keys(job_id: str) -> tuple[str, str]:
    """(text key, JSON key) in ``training-outputs``: reports/<job_id>/report.txt and .json."""
    from storage.keys import training_output_prefix

    prefix = training_output_prefix("reports", job_id)
    return prefix + "report.txt", prefix + "report.json"


def plot_key(job_id: str, name: str) -> str:
    """analysis/<job_id>/<name>.png in ``training-outputs``."""
    from storage.keys import training_output_prefix, validate_key_part

    return training_output_prefix("analysis", job_id) + validate_key_part(f"{name}.png", "name")


def save_report(store: ObjectStore, report: Report) -> SavedReport:
    """Upload the charts, then the JSON, then the text (last, so an existing text means a complete report)."""
    from storage.buckets import TRAINING_OUTPUTS

    plots = [
        (p.name, p.title, store.put_bytes(TRAINING_OUTPUTS, plot_key(report.job_id, p.name), p.png, "image/png"))
        for p in report.plots
    ]
    text_key, json_key = report_keys(report.job_id)
    stored_json = store.put_bytes(TRAINING_OUTPUTS, json_key, report.json_bytes(), "application/json")
    stored_text = store.put_bytes(TRAINING_OUTPUTS, text_key, report.text_bytes(), "text/plain; charset=utf-8")
    return SavedReport(stored_text, stored_json, plots)
