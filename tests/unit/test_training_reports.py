"""Training reports: text sections and numbers, JSON, charts, and each recommendation rule."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from servers.training.reports import (
    Environment,
    ModelInfo,
    PreviousModel,
    ReportInput,
    Thresholds,
    Timings,
    build_report,
    recommend,
    render_plots,
)
from servers.training.reports.recommendations import slope
from servers.training.reports.report import duration_text, normalize_spec, size_text
from servers.training.types import DatasetStats, EpochMetrics, Quality

START = datetime(2026, 11, 22, 14, 30, 22, tzinfo=UTC)
BASELINE = Quality(24.10, 0.702, 0.601)
SECTIONS = (
    "JOB",
    "PARAMETERS",
    "DATA",
    "METRICS PER EPOCH",
    "TOTAL IMPROVEMENT",
    "MODEL",
    "COMPARISON WITH THE PREVIOUS MODEL OF LAYER 2",
    "ENVIRONMENT",
    "RECOMMENDATIONS",
)
JSON_KEYS = {
    "job",
    "parameters",
    "data",
    "epochs",
    "improvement",
    "model",
    "comparison",
    "environment",
    "recommendations",
}


def curve(
    psnr: list[float],
    train_loss: list[float] | None = None,
    validation_loss: list[float] | None = None,
    epoch_seconds: float = 38.0,
) -> list[EpochMetrics]:
    n = len(psnr)
    train_loss = train_loss or [0.09 * math.exp(-0.2 * i) for i in range(n)]
    validation_loss = validation_loss or [0.088 * math.exp(-0.19 * i) for i in range(n)]
    return [
        EpochMetrics(
            epoch=i + 1,
            train_loss=train_loss[i],
            validation_loss=validation_loss[i],
            validation=Quality(psnr[i], 0.80 + 0.15 * i / max(n - 1, 1), 0.85 + 0.10 * i / max(n - 1, 1)),
            baseline=BASELINE,
            learning_rate=1e-4 * 0.5 * (1 + math.cos(math.pi * (i + 1) / n)),
            epoch_seconds=epoch_seconds,
        )
        for i in range(n)
    ]


def healthy_psnr(n: int = 10) -> list[float]:
    """Rises fast, then flattens slowly: no rule but success/data_sufficient fires."""
    return [24.10 + 8.0 * (1 - math.exp(-(e + 1) / 1.5)) for e in range(n)]


def make_input(**changes) -> ReportInput:
    history = changes.pop("history", None) or curve(healthy_psnr())
    base = ReportInput(
        job_id="trn-3f9c1a0b2d4e",
        layer=2,
        status="succeeded",
        description="document scans",
        spec={
            "layer": 2,
            "num_epochs": len(history),
            "batch_size": 2,
            "learning_rate": 1e-4,
            "patch_size": 128,
            "validation_split": 0.2,
            "seed": 42,
            "architecture": "small",
            "max_pairs": None,
            "dataset_prefix": "synthetic_",
            "description": "document scans",
        },
        timings=Timings(created=START - timedelta(seconds=20), started=START, ended=START + timedelta(seconds=296)),
        dataset=DatasetStats(
            clean_files=250,
            degraded_files=250,
            pairs_found=250,
            pairs_used=240,
            skipped_pairs=10,
            train_pairs=192,
            validation_pairs=48,
        ),
        history=history,
        model=ModelInfo(
            "small", 1_042_211, 4_231_887, "layer_2-20261122_143518", "layer_2/restormer_layer2_20261122_143518.pt"
        ),
        previous=PreviousModel("layer_2-20261122_141205", Quality(30.95, 0.908, 0.921), 0.0390, job_id="trn-0a1b"),
        environment=Environment("3.11.6", "2.13.0", "cuda:0", "NVIDIA H100 80GB HBM3", 2_254_857_830),
    )
    return replace(base, **changes)


def codes(inp: ReportInput, thresholds: Thresholds | None = None) -> set[str]:
    return {r.code for r in (recommend(inp, thresholds) if thresholds else recommend(inp))}


# -- text ------------------------------------------------------------------------------------------


def test_text_has_every_section_in_order_and_the_numbers():
    inp = make_input()
    report = build_report(inp, with_plots=False)
    text = report.text
    lines = text.splitlines()
    positions = [lines.index(section) if section in lines else -1 for section in SECTIONS]
    assert -1 not in positions, [s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "TRAINING REPORT - LAYER 2" in lines[1]
    best = inp.history[-1]
    for expected in (
        "Job ID: trn-3f9c1a0b2d4e",
        "Status: SUCCEEDED",
        "Started: 2026-11-22 14:30:22 UTC",
        "Ended: 2026-11-22 14:35:18 UTC",
        "Duration: 4 minutes 56 seconds",
        "Waited in queue: 20.0 seconds",
        "Epochs completed: 10 of 10",
        "Batch size: 2",
        "Learning rate: 0.0001",
        "Optimizer: AdamW",
        "Patch size: 128 px",
        "Seed: 42",
        "Architecture: small",
        "Max pairs: all",
        'Dataset prefix: "synthetic_"',
        "Total files found: 500",
        "Pairs used: 240 (training 192, validation 48)",
        "Pairs skipped: 10",
        "Data effectiveness: 96.0% (240 pairs used of 250 clean files)",
        "data effectiveness = pairs used / clean files",
        f"{best.validation.psnr:.2f}",
        f"PSNR: 24.10 -> {best.validation.psnr:.2f} dB (+{best.validation.psnr - 24.10:.2f} dB)",
        "SSIM: 0.702 -> 0.950 (+0.248)",
        "Accuracy: 60.1% -> 95.0% (+34.9 points)",
        "Epoch 1 -> epoch 10:",
        "Model ID: layer_2-20261122_143518",
        "Stored at: models/layer_2/restormer_layer2_20261122_143518.pt",
        "Parameters: 1,042,211",
        "Size: 4.04 MiB",
        "Previous model: layer_2-20261122_141205 (job trn-0a1b)",
        f"({best.validation.psnr - 30.95:+.2f} dB, better)",
        "Overall: better",
        "Python: 3.11.6",
        "PyTorch: 2.13.0",
        "Device: cuda:0 (NVIDIA H100 80GB HBM3)",
        "Peak device memory: 2.10 GiB",
        "[OK] Training succeeded",
        "Report generated automatically on 2026-11-22 14:35:18 UTC",
    ):
        assert expected in text, expected
    # every epoch in the table, the best one starred
    for record in inp.history:
        assert f"{record.validation.psnr:.2f}" in text
    assert "   10* " in text
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]


def test_text_first_to_last_changes_are_right():
    history = curve([28.45, 29.12, 32.18], train_loss=[0.0932, 0.05, 0.0234], validation_loss=[0.09, 0.05, 0.03])
    text = build_report(make_input(history=history), with_plots=False).text
    assert "Training loss: 0.0932 -> 0.0234 (-0.0698, -74.9%)" in text
    assert "PSNR: 28.45 -> 32.18 dB (+3.73 dB, +13.1%)" in text


def test_first_model_of_layer_and_no_registration_when_cancelled():
    inp = make_input(
        status="cancelled", previous=None, model=ModelInfo("small", 1_042_211), history=curve(healthy_psnr(4))
    )
    inp = replace(inp, spec={**inp.spec, "num_epochs": 10})
    report = build_report(inp, with_plots=False)
    assert "No previous model of layer 2: this is its first model." in report.text
    assert "Model: not registered (the job was cancelled)" in report.text
    assert "Status: CANCELLED" in report.text
    assert "Epochs completed: 4 of 10" in report.text
    assert report.json["comparison"] == {"previous_model_id": None, "verdict": "first_model"}
    assert report.json["model"]["registered"] is False
    assert "[WARNING] The job was cancelled after epoch 4 of 10" in report.text


def test_worse_than_previous_model():
    inp = make_input(previous=PreviousModel("layer_2-20261101_000000", Quality(40.0, 0.99, 0.99), 0.01))
    report = build_report(inp, with_plots=False)
    assert report.json["comparison"]["verdict"] == "worse"
    assert "worse)" in report.text
    assert "worse_than_previous" in {r.code for r in report.recommendations}
    assert "success" not in {r.code for r in report.recommendations}


def test_effectiveness_falls_back_to_pairs_found():
    stats = DatasetStats(clean_files=0, degraded_files=0, pairs_found=40, pairs_used=30, train_pairs=24)
    report = build_report(make_input(dataset=stats), with_plots=False)
    assert "Data effectiveness: 75.0% (30 pairs used of 40 complete pairs found)" in report.text
    assert report.json["data"]["effectiveness_percent"] == 75.0
    empty = build_report(make_input(dataset=DatasetStats()), with_plots=False)
    assert "Data effectiveness: n/a" in empty.text
    assert empty.json["data"]["effectiveness_percent"] is None


def test_long_history_table_is_shortened_but_json_has_every_epoch():
    n = 300
    history = curve([24.1 + 6 * (1 - math.exp(-e / 50)) for e in range(n)], epoch_seconds=2.0)
    report = build_report(make_input(history=history), with_plots=False)
    rows = [line for line in report.text.splitlines() if line[:6].strip().rstrip("*").isdigit()]
    assert 20 <= len(rows) <= 45
    assert f"({n - len(rows)} epochs not shown; the JSON report lists every epoch)" in report.text
    assert len(report.json["epochs"]) == n
    assert [e["epoch"] for e in report.json["epochs"]] == list(range(1, n + 1))


def test_inputs_sort_epochs_and_take_unix_times():
    t = START.timestamp()
    history = [
        EpochMetrics(2, 0.05, 0.06, Quality(30.0, 0.9, 0.9), Quality(25.0, 0.7, 0.6), 1e-4, 10.0, t + 20),
        EpochMetrics(1, 0.1, 0.11, Quality(28.0, 0.8, 0.8), Quality(25.0, 0.7, 0.6), 2e-4, 10.0),
    ]
    inp = make_input(history=history, timings=Timings(created=t - 5, started=t, ended=t + 20.5))
    assert [h.epoch for h in inp.history] == [1, 2]
    assert inp.history[1].validation == Quality(30.0, 0.9, 0.9)
    assert inp.history[1].baseline == Quality(25.0, 0.7, 0.6)
    assert inp.best_record().epoch == 2
    text = build_report(inp, with_plots=False).text
    assert "Duration: 20.5 seconds" in text
    assert "Started: 2026-11-22 14:30:22 UTC" in text
    with pytest.raises(ValueError, match="best_epoch"):
        make_input(best_epoch=99)
    with pytest.raises(ValueError, match="status"):
        make_input(status="done")


def test_spec_normalisation():
    spec = normalize_spec({"seed": "4294967295", "architecture": "ARCHITECTURE_TINY", "learning_rate": "0.001"})
    assert spec["seed"] == 4294967295 and spec["architecture"] == "tiny" and spec["learning_rate"] == 0.001
    assert normalize_spec({"architecture": 0})["architecture"] == "base"
    assert normalize_spec({"architecture": "ARCHITECTURE_UNSPECIFIED"})["architecture"] == "base"
    assert normalize_spec({"custom": 1})["custom"] == 1


def test_formatting_helpers():
    assert duration_text(296) == "4 minutes 56 seconds"
    assert duration_text(3605) == "1 hour 0 minutes 5 seconds"
    assert duration_text(61) == "1 minute 1 second"
    assert duration_text(42.5) == "42.5 seconds"
    assert duration_text(None) == "n/a"
    assert size_text(102_615) == "100.21 KiB"
    assert size_text(512) == "512 bytes"
    assert size_text(0) == "n/a"


# -- JSON ------------------------------------------------------------------------------------------


def test_json_has_the_proto_keys_and_round_trips():
    report = build_report(make_input(), with_plots=False)
    assert set(report.json) == JSON_KEYS
    text = json.dumps(report.json, allow_nan=False)
    assert json.loads(text) == report.json
    assert json.loads(report.json_bytes()) == report.json
    data = report.json
    assert data["job"]["job_id"] == "trn-3f9c1a0b2d4e"
    assert data["job"]["started_at"] == "2026-11-22T14:30:22Z"
    assert data["job"]["duration_seconds"] == 296.0
    assert data["parameters"]["optimizer"] == "AdamW"
    assert data["data"]["effectiveness_percent"] == 96.0
    assert len(data["epochs"]) == 10 and data["epochs"][-1]["best"] is True
    assert data["improvement"]["best_epoch"] == 10
    assert data["improvement"]["best_vs_baseline"]["psnr_db"] == pytest.approx(report_input_best_psnr() - BASELINE.psnr)
    assert data["model"]["model_id"] == "layer_2-20261122_143518"
    assert data["comparison"]["delta"]["psnr"] == pytest.approx(report_input_best_psnr() - 30.95)
    assert data["environment"]["accelerated"] is True
    assert {r["code"] for r in data["recommendations"]} == {"success", "data_sufficient", "better_than_previous"}
    assert "layer" not in data["parameters"]  # reported under "job"


def report_input_best_psnr() -> float:
    return healthy_psnr()[-1]


def test_json_turns_nan_into_null():
    history = curve(healthy_psnr(5))
    history[2] = replace(history[2], validation_loss=math.nan, train_loss=math.inf)
    report = build_report(make_input(history=history), with_plots=False)
    json.dumps(report.json, allow_nan=False)
    assert report.json["epochs"][2]["validation_loss"] is None
    assert "n/a" in report.text
    assert "diverging" in {r.code for r in report.recommendations}


def test_empty_history_still_reports():
    inp = make_input(history=[], status="failed", error_message="out of device memory")
    inp = replace(inp, history=[])
    report = build_report(inp)
    assert report.plots == []
    assert "No epoch completed." in report.text
    assert "Error: out of device memory" in report.text
    json.dumps(report.json, allow_nan=False)


# -- plots -----------------------------------------------------------------------------------------


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_plots_are_small_valid_pngs_and_deterministic():
    inp = make_input()
    report = build_report(inp)
    assert [(p.name, p.title) for p in report.plots] == [
        ("loss", "Training and validation loss per epoch"),
        ("psnr", "Validation PSNR per epoch"),
        ("ssim", "Validation SSIM per epoch"),
        ("accuracy", "Validation accuracy per epoch (pixels within 0.02)"),
    ]
    for name, _title, png in report.plots:  # unpacks as (name, title, png)
        assert _png_size(png) == (640, 360), name
        assert 2_000 < len(png) <= 100_000, name
        assert png.endswith(b"IEND\xaeB`\x82")
    again = render_plots(inp.history, best_epoch=10)
    assert [p.png for p in again] == [p.png for p in report.plots]


def test_plots_of_one_epoch_and_of_a_long_run():
    for history in (curve([26.0]), curve([24 + e * 0.01 for e in range(500)], epoch_seconds=1.0)):
        plots = render_plots(history, best_epoch=history[-1].epoch)
        assert len(plots) == 4
        for plot in plots:
            _png_size(plot.png)
            assert len(plot.png) <= 100_000


# -- recommendations -------------------------------------------------------------------------------


def test_slope():
    assert slope([1, 2, 3, 4]) == pytest.approx(1.0)
    assert slope([5, 5, 5]) == 0.0
    assert slope([3]) == 0.0


def test_healthy_run_gets_only_ok():
    inp = make_input(previous=None)
    assert codes(inp) == {"success", "data_sufficient"}
    assert all(r.severity == "ok" for r in recommend(inp))


def test_more_epochs_when_psnr_still_rises():
    history = curve([24.5 + 0.5 * e for e in range(8)])
    recs = {r.code: r for r in recommend(make_input(history=history))}
    assert "more_epochs" in recs
    assert recs["more_epochs"].severity == "tip"
    assert "0.50 dB/epoch over the last 5 epochs (threshold 0.05)" in recs["more_epochs"].message
    assert "num_epochs=12" in recs["more_epochs"].message
    assert recs["more_epochs"].evidence["psnr_slope_db_per_epoch"] == pytest.approx(0.5)
    assert "plateau" not in recs
    # just under the threshold: no
    flat = curve([30 + 0.04 * e for e in range(8)])
    assert "more_epochs" not in codes(make_input(history=flat))
    # a cancelled job is told to resume
    cancelled = make_input(history=history, status="cancelled")
    message = next(r.message for r in recommend(cancelled) if r.code == "more_epochs")
    assert "resume_job_id=trn-3f9c1a0b2d4e" in message


def test_overfitting_when_validation_loss_rises_while_training_loss_falls():
    train = [0.10, 0.08, 0.06, 0.05, 0.04, 0.035, 0.03, 0.025]
    val = [0.10, 0.08, 0.065, 0.06, 0.062, 0.066, 0.070, 0.075]
    psnr = [26, 27, 28, 28.5, 28.4, 28.2, 28.0, 27.8]
    recs = {r.code: r for r in recommend(make_input(history=curve(psnr, train, val)))}
    assert "overfitting" in recs and recs["overfitting"].severity == "warning"
    message = recs["overfitting"].message
    assert "rose 25.0% from its minimum 0.0600 (epoch 4) to 0.0750 (epoch 8)" in message
    assert "training loss fell 50.0%" in message
    assert "more_epochs" not in recs and "data_sufficient" not in recs and "success" not in recs
    # validation loss rising together with training loss: not overfitting (diverging instead)
    both_up = curve(psnr, [0.05, 0.05, 0.05, 0.05, 0.055, 0.06, 0.065, 0.07], val)
    assert "overfitting" not in codes(make_input(history=both_up))
    # a 3% rise is under the 5% threshold
    small = [0.10, 0.08, 0.065, 0.06, 0.0605, 0.061, 0.0615, 0.0618]
    assert "overfitting" not in codes(make_input(history=curve(psnr, train, small)))


def test_below_baseline():
    history = curve([24.2, 24.25, 24.3, 24.3, 24.3])
    recs = {r.code: r for r in recommend(make_input(history=history))}
    assert "below_baseline" in recs
    assert "24.30 dB is only slightly above the degraded inputs' 24.10 dB (+0.20 dB" in recs["below_baseline"].message
    assert "success" not in recs
    worse = curve([23.0, 23.5, 23.4])
    assert "is below the degraded inputs' 24.10 dB (-0.60 dB" in next(
        r.message for r in recommend(make_input(history=worse)) if r.code == "below_baseline"
    )
    assert "below_baseline" not in codes(make_input())


def test_plateau_early():
    psnr = [29.0, 31.0, 31.05, 31.02, 31.04, 31.03, 31.05, 31.04, 31.03, 31.05]
    recs = {r.code: r for r in recommend(make_input(history=curve(psnr)))}
    assert "plateau" in recs
    message = recs["plateau"].message
    assert "reached 31.00 dB at epoch 2 of 10" in message
    assert "3.33e-05 instead of 0.0001" in message
    assert "more_epochs" not in recs
    # too few epochs to call it
    assert "plateau" not in codes(make_input(history=curve(psnr[:5])))
    assert "plateau" not in codes(make_input())


def test_data_rules():
    few = DatasetStats(31, 31, 31, 25, 0, 22, 3)
    recs = {r.code: r for r in recommend(make_input(dataset=few))}
    assert "Only 25 pairs were used (threshold 50)" in recs["few_pairs"].message
    assert "Only 3 validation pairs (threshold 4)" in recs["few_validation_pairs"].message
    assert "data_sufficient" not in recs
    assert "low_data_effectiveness" not in recs  # 80.6%

    lossy = DatasetStats(
        clean_files=100, degraded_files=90, pairs_found=90, pairs_used=60, skipped_pairs=10, train_pairs=48
    )
    inp = make_input(dataset=lossy)
    inp = replace(inp, spec={**inp.spec, "max_pairs": 60})
    message = next(r.message for r in recommend(inp) if r.code == "low_data_effectiveness")
    assert message.startswith("Data effectiveness was 60.0% (threshold 80%)")
    assert "10 images without their clean/degraded counterpart" in message
    assert "10 pairs skipped (unreadable, mismatched or too small for patch_size 128)" in message
    assert "20 pairs left out by max_pairs=60" in message
    uncapped = replace(inp, spec={**inp.spec, "max_pairs": None})
    message = next(r.message for r in recommend(uncapped) if r.code == "low_data_effectiveness")
    assert "max_pairs" not in message and "20 pairs added to the dataset after the job read it" in message


def test_slow_cpu():
    slow = make_input(history=curve(healthy_psnr(), epoch_seconds=120.0), environment=Environment(device="cpu"))
    message = next(r.message for r in recommend(slow) if r.code == "slow_cpu")
    assert "Trained on CPU at 120 s per epoch (threshold 60 s)" in message
    fast_cpu = make_input(history=curve(healthy_psnr(), epoch_seconds=20.0), environment=Environment(device="cpu"))
    assert "slow_cpu" not in codes(fast_cpu)
    slow_gpu = make_input(history=curve(healthy_psnr(), epoch_seconds=120.0))
    assert "slow_cpu" not in codes(slow_gpu)


def test_diverging():
    rising = curve([26, 25.5, 25.0, 24.8], train_loss=[0.05, 0.06, 0.08, 0.09])
    message = next(r.message for r in recommend(make_input(history=rising)) if r.code == "diverging")
    assert "Training loss rose 80.0% from 0.0500 (epoch 1) to 0.0900 (epoch 4)" in message
    assert "1e-05 instead of 0.0001" in message
    history = curve(healthy_psnr(4))
    history[1] = replace(history[1], train_loss=math.nan)
    assert "became NaN or infinite at epoch 2" in next(
        r.message for r in recommend(make_input(history=history)) if r.code == "diverging"
    )
    assert "diverging" not in codes(make_input())


def test_incomplete_failed_job():
    inp = make_input(status="failed", error_message="CUDA out of memory", history=curve(healthy_psnr(3)))
    inp = replace(inp, spec={**inp.spec, "num_epochs": 10})
    message = next(r.message for r in recommend(inp) if r.code == "incomplete")
    assert "failed after epoch 3 of 10 (CUDA out of memory)" in message
    assert "resume_job_id=trn-3f9c1a0b2d4e to finish the 7 epochs left" in message
    assert "success" not in codes(inp) and "data_sufficient" not in codes(inp)


def test_comparison_rules_and_tolerance():
    best = healthy_psnr()[-1]
    better = make_input(previous=PreviousModel("layer_2-20261101_000000", Quality(best - 1.0, 0.9, 0.9)))
    assert "better_than_previous" in codes(better)
    same = make_input(previous=PreviousModel("layer_2-20261101_000000", Quality(best - 0.05, 0.95, 0.95)))
    assert not {"better_than_previous", "worse_than_previous"} & codes(same)
    assert build_report(same, with_plots=False).json["comparison"]["verdict"] == "similar"


def test_thresholds_are_configurable():
    inp = make_input(dataset=DatasetStats(31, 31, 31, 25, 0, 20, 5))
    assert "few_pairs" in codes(inp)
    assert "few_pairs" not in codes(inp, Thresholds(min_pairs=10))


def test_recommendations_are_ordered_ok_warning_tip():
    history = curve([24.2 + 0.06 * e for e in range(6)])
    inp = make_input(history=history, dataset=DatasetStats(31, 31, 31, 25, 0, 20, 5))
    severities = [r.severity for r in recommend(inp)]
    order = {"ok": 0, "warning": 1, "tip": 2}
    assert severities == sorted(severities, key=order.__getitem__)
    assert "warning" in severities and "tip" in severities
    lines = build_report(inp, with_plots=False).text.split("RECOMMENDATIONS\n", 1)[1]
    assert lines.startswith(("[OK]", "[WARNING]"))


def test_plots_from_worker_threads_match():
    from concurrent.futures import ThreadPoolExecutor

    histories = [curve(healthy_psnr(n)) for n in (3, 7, 12, 20)]
    expected = [[p.png for p in render_plots(h, h[-1].epoch)] for h in histories]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda h: [p.png for p in render_plots(h, h[-1].epoch)], histories))
    assert got == expected
