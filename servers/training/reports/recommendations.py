"""Recommendations derived from a training run's curves and data, each a short sentence with the
numbers that triggered it.

Rules (thresholds in ``Thresholds``; "window" = the last ``trend_window`` epochs, or all when fewer):

- ``incomplete`` (warning): the job was cancelled or failed; resume it to finish the epochs left.
- ``diverging`` (warning): a loss is NaN/infinite, or the last training loss is more than
  ``divergence_rise`` (10%) above the first one (>= 3 epochs) -> lower the learning rate.
- ``below_baseline`` (warning): the best validation PSNR beats the degraded inputs by less than
  ``min_gain_db`` (0.5 dB) -> check that clean/degraded pairs match, and the learning rate.
- ``overfitting`` (warning): >= 4 epochs, validation loss ended more than ``overfit_rise`` (5%)
  above its minimum, reached at least 2 epochs before the end, while training loss kept falling
  (by more than ``overfit_train_drop``, 2%) -> more data or augmentation, or fewer epochs.
- ``more_epochs`` (tip): >= 3 epochs, the least-squares slope of validation PSNR over the window is
  above ``improving_slope_db`` (0.05 dB/epoch) and the model is not overfitting -> train longer.
- ``plateau`` (tip): >= 6 epochs, validation PSNR came within ``plateau_tolerance_db`` (0.1 dB) of
  its best in the first ``plateau_fraction`` (50%) of the epochs and never improved by more than
  that afterwards -> lower learning rate, a smaller model, or fewer epochs.
- ``few_pairs`` (tip): fewer than ``min_pairs`` (50) pairs used -> generate more synthetic data.
- ``few_validation_pairs`` (tip): fewer than ``min_validation_pairs`` (4) validation pairs -> the
  validation metrics are noisy.
- ``low_data_effectiveness`` (tip): data effectiveness below ``min_effectiveness`` (80%), with the
  reasons (pairs without a counterpart, skipped, left out by max_pairs).
- ``slow_cpu`` (tip): trained on CPU at more than ``slow_cpu_epoch_seconds`` (60 s) per epoch -> GPU.
- ``better_than_previous`` (ok) / ``worse_than_previous`` (warning): best PSNR vs the previous
  model of the layer differs by more than ``comparison_tolerance_db`` (0.1 dB).
- ``success`` (ok): succeeded, no warning, and at least ``min_gain_db`` over the baseline.
- ``data_sufficient`` (ok): succeeded with at least ``min_pairs`` pairs and no overfitting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from servers.training.reports.inputs import ReportInput
from servers.training.types import EpochMetrics, finite

Severity = Literal["ok", "warning", "tip"]
SEVERITY_ORDER: dict[str, int] = {"ok": 0, "warning": 1, "tip": 2}
SEVERITY_LABEL: dict[str, str] = {"ok": "[OK]", "warning": "[WARNING]", "tip": "[TIP]"}


@dataclass(frozen=True)
class Thresholds:
    """The numbers the rules compare with (see the module docstring)."""

    trend_window: int = 5
    improving_slope_db: float = 0.05
    overfit_rise: float = 0.05
    overfit_train_drop: float = 0.02
    min_gain_db: float = 0.5
    plateau_tolerance_db: float = 0.1
    plateau_fraction: float = 0.5
    plateau_min_epochs: int = 6
    min_pairs: int = 50
    min_validation_pairs: int = 4
    min_effectiveness: float = 0.8
    divergence_rise: float = 0.10
    slow_cpu_epoch_seconds: float = 60.0
    comparison_tolerance_db: float = 0.1


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Recommendation:
    code: str
    severity: Severity
    message: str
    evidence: dict[str, float | int | str] = field(default_factory=dict)

    def line(self) -> str:
        return f"{SEVERITY_LABEL[self.severity]} {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "evidence": dict(self.evidence)}


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` against 0, 1, 2, ... (0.0 for fewer than 2 values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def _lr(value: float) -> str:
    return f"{value:.3g}"


def _window(history: Sequence[EpochMetrics], size: int) -> list[EpochMetrics]:
    return list(history[-max(size, 1) :])


def check_overfitting(history: Sequence[EpochMetrics], t: Thresholds) -> Recommendation | None:
    if len(history) < 4 or not all(finite(h.validation_loss) and finite(h.train_loss) for h in history):
        return None
    best_i = min(range(len(history)), key=lambda i: history[i].validation_loss)
    best, last = history[best_i], history[-1]
    if len(history) - 1 - best_i < 2 or best.validation_loss <= 0:
        return None
    rise = (last.validation_loss - best.validation_loss) / best.validation_loss
    train_drop = (best.train_loss - last.train_loss) / best.train_loss if best.train_loss > 0 else 0.0
    if rise <= t.overfit_rise or train_drop <= t.overfit_train_drop:
        return None
    return Recommendation(
        "overfitting",
        "warning",
        f"Validation loss rose {rise:.1%} from its minimum {best.validation_loss:.4f} (epoch {best.epoch}) to "
        f"{last.validation_loss:.4f} (epoch {last.epoch}) while training loss fell {train_drop:.1%}: the model is "
        f"overfitting; add more pairs (GenerateSyntheticData) or augmentation, or train about {best.epoch} epochs.",
        {
            "min_validation_loss": best.validation_loss,
            "min_validation_loss_epoch": best.epoch,
            "final_validation_loss": last.validation_loss,
            "validation_loss_rise": rise,
            "train_loss_drop": train_drop,
            "threshold_rise": t.overfit_rise,
        },
    )


def check_more_epochs(inp: ReportInput, t: Thresholds, overfitting: bool) -> Recommendation | None:
    history = inp.history
    if len(history) < 3 or overfitting:
        return None
    window = _window(history, t.trend_window)
    psnrs = [h.validation.psnr for h in window]
    if not all(finite(p) for p in psnrs):
        return None
    rate = slope(psnrs)
    if rate <= t.improving_slope_db:
        return None
    done = history[-1].epoch
    suggested = max(done + 1, math.ceil(done * 1.5))
    if inp.status == "succeeded":
        how = f"train again with num_epochs={suggested} (this run had {done})"
    else:
        how = f"resume this job (resume_job_id={inp.job_id}) with num_epochs={suggested}"
    return Recommendation(
        "more_epochs",
        "tip",
        f"Validation PSNR was still rising by {rate:.2f} dB/epoch over the last {len(window)} epochs "
        f"(threshold {t.improving_slope_db:.2f}): more epochs should help; {how}.",
        {"psnr_slope_db_per_epoch": rate, "window_epochs": len(window), "threshold": t.improving_slope_db},
    )


def check_plateau(inp: ReportInput, t: Thresholds, blocked: bool) -> Recommendation | None:
    history = inp.history
    n = len(history)
    if n < t.plateau_min_epochs or blocked:
        return None
    psnrs = [h.validation.psnr for h in history]
    if not all(finite(p) for p in psnrs):
        return None
    best = max(psnrs)
    reached = next(i for i, p in enumerate(psnrs) if p >= best - t.plateau_tolerance_db)
    if reached + 1 > n * t.plateau_fraction:
        return None
    lr = inp.spec.get("learning_rate")
    lower = f"a lower learning rate (e.g. {_lr(float(lr) / 3)} instead of {_lr(float(lr))})" if lr else "a lower lr"
    return Recommendation(
        "plateau",
        "tip",
        f"Validation PSNR reached {psnrs[reached]:.2f} dB at epoch {history[reached].epoch} of {history[-1].epoch} "
        f"and gained at most {t.plateau_tolerance_db:.2f} dB after that: it plateaued early; try {lower}, "
        f"a smaller architecture, or fewer epochs.",
        {
            "plateau_epoch": history[reached].epoch,
            "best_psnr": best,
            "tolerance_db": t.plateau_tolerance_db,
            "fraction": t.plateau_fraction,
        },
    )


def check_below_baseline(inp: ReportInput, t: Thresholds) -> Recommendation | None:
    best = inp.best_record()
    if best is None or not finite(best.validation.psnr):
        return None
    gain = best.validation.psnr - best.baseline.psnr
    if gain >= t.min_gain_db:
        return None
    where = "below" if gain < 0 else "only slightly above"
    lr = inp.spec.get("learning_rate")
    lr_text = f" (now {_lr(float(lr))})" if lr else ""
    return Recommendation(
        "below_baseline",
        "warning",
        f"The best validation PSNR {best.validation.psnr:.2f} dB is {where} the degraded inputs' "
        f"{best.baseline.psnr:.2f} dB ({gain:+.2f} dB, threshold +{t.min_gain_db:.1f} dB): check that the clean and "
        f"degraded images of each pair match, and try a lower learning rate{lr_text} or more epochs.",
        {
            "best_psnr": best.validation.psnr,
            "baseline_psnr": best.baseline.psnr,
            "gain_db": gain,
            "threshold_db": t.min_gain_db,
        },
    )


def check_diverging(inp: ReportInput, t: Thresholds) -> Recommendation | None:
    history = inp.history
    if not history:
        return None
    lr = inp.spec.get("learning_rate")
    advice = f"lower the learning rate (e.g. {_lr(float(lr) / 10)} instead of {_lr(float(lr))})" if lr else "lower it"
    bad = [h.epoch for h in history if not (finite(h.train_loss) and finite(h.validation_loss))]
    if bad:
        return Recommendation(
            "diverging",
            "warning",
            f"The loss became NaN or infinite at epoch {bad[0]}: training diverged; {advice}.",
            {"first_bad_epoch": bad[0]},
        )
    if len(history) < 3 or history[0].train_loss <= 0:
        return None
    rise = (history[-1].train_loss - history[0].train_loss) / history[0].train_loss
    if rise <= t.divergence_rise:
        return None
    return Recommendation(
        "diverging",
        "warning",
        f"Training loss rose {rise:.1%} from {history[0].train_loss:.4f} (epoch {history[0].epoch}) to "
        f"{history[-1].train_loss:.4f} (epoch {history[-1].epoch}), threshold {t.divergence_rise:.0%}: "
        f"training is unstable; {advice}.",
        {"train_loss_rise": rise, "threshold": t.divergence_rise},
    )


def check_incomplete(inp: ReportInput) -> Recommendation | None:
    if inp.status == "succeeded":
        return None
    done = inp.history[-1].epoch if inp.history else 0
    planned = inp.planned_epochs()
    of = f" of {planned}" if planned else ""
    left = f" the {planned - done} epochs left" if planned and planned > done else " training"
    why = "was cancelled" if inp.status == "cancelled" else "failed"
    cause = f" ({inp.error_message})" if inp.status == "failed" and inp.error_message else ""
    fix = "fix the cause and " if inp.status == "failed" else ""
    return Recommendation(
        "incomplete",
        "warning",
        f"The job {why} after epoch {done}{of}{cause} and no model was registered: {fix}resume it with "
        f"resume_job_id={inp.job_id} to finish{left}.",
        {"epochs_completed": done, "epochs_planned": planned or 0, "status": inp.status},
    )


def check_data(inp: ReportInput, t: Thresholds) -> list[Recommendation]:
    d = inp.dataset
    found: list[Recommendation] = []
    if 0 < d.pairs_used < t.min_pairs:
        found.append(
            Recommendation(
                "few_pairs",
                "tip",
                f"Only {d.pairs_used} pairs were used (threshold {t.min_pairs}): generate more synthetic data "
                f"(GenerateSyntheticData, e.g. num_images={max(t.min_pairs * 2, d.pairs_used * 4)}) for a more "
                "robust model.",
                {"pairs_used": d.pairs_used, "threshold": t.min_pairs},
            )
        )
    if 0 < d.validation_pairs < t.min_validation_pairs:
        found.append(
            Recommendation(
                "few_validation_pairs",
                "tip",
                f"Only {d.validation_pairs} validation pairs (threshold {t.min_validation_pairs}): the validation "
                "metrics are noisy; use more pairs or a larger validation_split.",
                {"validation_pairs": d.validation_pairs, "threshold": t.min_validation_pairs},
            )
        )
    effectiveness = d.effectiveness()
    if effectiveness is not None and effectiveness < t.min_effectiveness:
        unmatched = max(d.clean_files, d.degraded_files) - d.pairs_found
        capped = max(d.pairs_found - d.skipped_pairs - d.pairs_used, 0)
        reasons = []
        if unmatched > 0:
            reasons.append(f"{unmatched} images without their clean/degraded counterpart")
        if d.skipped_pairs > 0:
            patch = inp.spec.get("patch_size")
            hint = f" for patch_size {patch}" if patch else ""
            reasons.append(f"{d.skipped_pairs} pairs skipped (unreadable, mismatched or too small{hint})")
        if capped > 0 and inp.spec.get("max_pairs"):
            reasons.append(f"{capped} pairs left out by max_pairs={inp.spec.get('max_pairs')}")
        elif capped > 0:  # no cap: these pairs were added after the job read the dataset
            reasons.append(f"{capped} pairs added to the dataset after the job read it")
        because = "; ".join(reasons) or "pairs missing"
        found.append(
            Recommendation(
                "low_data_effectiveness",
                "tip",
                f"Data effectiveness was {effectiveness:.1%} (threshold {t.min_effectiveness:.0%}): {because}.",
                {
                    "effectiveness": effectiveness,
                    "unmatched_files": max(unmatched, 0),
                    "skipped_pairs": d.skipped_pairs,
                    "left_out_by_max_pairs": capped,
                    "threshold": t.min_effectiveness,
                },
            )
        )
    return found


def check_slow_cpu(inp: ReportInput, t: Thresholds) -> Recommendation | None:
    env = inp.environment
    if not inp.history or env.accelerated or not env.device.startswith("cpu"):
        return None
    mean = sum(h.epoch_seconds for h in inp.history) / len(inp.history)
    if mean <= t.slow_cpu_epoch_seconds:
        return None
    return Recommendation(
        "slow_cpu",
        "tip",
        f"Trained on CPU at {mean:.0f} s per epoch (threshold {t.slow_cpu_epoch_seconds:.0f} s): a GPU would "
        "make longer trainings and larger architectures practical.",
        {"mean_epoch_seconds": mean, "threshold": t.slow_cpu_epoch_seconds},
    )


def check_previous(inp: ReportInput, t: Thresholds) -> Recommendation | None:
    best = inp.best_record()
    prev = inp.previous
    if best is None or prev is None or not finite(best.validation.psnr):
        return None
    delta = best.validation.psnr - prev.metrics.psnr
    evidence = {"previous_model_id": prev.model_id, "psnr_delta_db": delta, "tolerance_db": t.comparison_tolerance_db}
    if delta > t.comparison_tolerance_db:
        return Recommendation(
            "better_than_previous",
            "ok",
            f"Better than the previous model {prev.model_id}: {delta:+.2f} dB PSNR, "
            f"{best.validation.ssim - prev.metrics.ssim:+.3f} SSIM.",
            evidence,
        )
    if delta < -t.comparison_tolerance_db:
        return Recommendation(
            "worse_than_previous",
            "warning",
            f"Worse than the previous model {prev.model_id} by {-delta:.2f} dB PSNR: keep using it for restoring, "
            "or check the new data and parameters (the validation sets may differ).",
            evidence,
        )
    return None


def recommend(inp: ReportInput, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Recommendation]:
    """Every recommendation that applies, ok first, then warnings, then tips."""
    t = thresholds
    found: list[Recommendation] = []

    def add(rec: Recommendation | None) -> None:
        if rec is not None:
            found.append(rec)

    add(check_incomplete(inp))
    add(check_diverging(inp, t))
    add(check_below_baseline(inp, t))
    overfit = check_overfitting(inp.history, t)
    add(overfit)
    more = check_more_epochs(inp, t, overfitting=overfit is not None)
    add(more)
    add(check_plateau(inp, t, blocked=overfit is not None or more is not None))
    found.extend(check_data(inp, t))
    add(check_slow_cpu(inp, t))
    add(check_previous(inp, t))

    warnings = [r for r in found if r.severity == "warning"]
    best = inp.best_record()
    if inp.status == "succeeded" and best is not None and not warnings:
        gain = best.validation.psnr - best.baseline.psnr
        found.append(
            Recommendation(
                "success",
                "ok",
                f"Training succeeded with good metrics: best validation PSNR {best.validation.psnr:.2f} dB "
                f"({gain:+.2f} dB over the degraded inputs), SSIM {best.validation.ssim:.3f}.",
                {"best_psnr": best.validation.psnr, "gain_db": gain},
            )
        )
    if inp.status == "succeeded" and inp.dataset.pairs_used >= t.min_pairs and overfit is None:
        found.append(
            Recommendation(
                "data_sufficient",
                "ok",
                f"The {inp.dataset.pairs_used} pairs were enough for this training: no sign of overfitting.",
                {"pairs_used": inp.dataset.pairs_used, "threshold": t.min_pairs},
            )
        )
    found.sort(key=lambda r: SEVERITY_ORDER[r.severity])  # stable: rule order within a severity
    return found
