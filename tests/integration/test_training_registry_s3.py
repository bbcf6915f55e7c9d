"""The model registry and report upload against a real S3 server (SeaweedFS ``weed mini`` on loopback)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from genmesh.errors import InvalidArgument, NotFound
from servers.mesh.s3 import S3Server
from servers.training import registry
from servers.training.registry import (
    get_model,
    list_models,
    load_model_bytes,
    previous_model,
    register_model,
)
from servers.training.reports import ModelInfo, ReportInput, build_report, save_report
from servers.training.types import DatasetStats, EpochMetrics, Quality
from storage import MODELS, TRAINING_OUTPUTS, ObjectStore

pytestmark = pytest.mark.integration

ACCESS_KEY = "genmesh-test"
SECRET_KEY = "genmesh-test-secret-0123456789"
T0 = datetime(2026, 11, 22, 14, 35, 18, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3-registry") / "data", ACCESS_KEY, SECRET_KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()  # SIGTERM by PID, SIGKILL after a timeout
        assert not server.alive()


@pytest.fixture(scope="module")
def store(s3_server) -> ObjectStore:
    store = ObjectStore(s3_server.settings())
    store.ensure_buckets()
    return store


def _metadata(psnr: float, ssim: float, accuracy: float, job_id: str) -> dict:
    return {
        "job_id": job_id,
        "architecture": "tiny",
        "parameter_count": 25_042,
        "dataset_prefix": "synthetic_",
        "best_epoch": 3,
        "metrics": {"psnr": psnr, "ssim": ssim, "accuracy": accuracy},
        "baseline": {"psnr": 24.1, "ssim": 0.70, "accuracy": 0.60},
        "validation_loss": 0.031,
        "spec": {"layer": 2, "num_epochs": 3, "batch_size": 2, "learning_rate": 0.0003},
    }


@pytest.fixture(scope="module")
def registered(store):
    """Two versions of layer 2 and one of layer 1."""
    v1 = register_model(
        store, layer=2, model_bytes=b"\x01" * 1000, metadata=_metadata(30.0, 0.90, 0.90, "trn-a"), now=T0
    )
    l1 = register_model(
        store, layer=1, model_bytes=b"\x03" * 10, metadata=_metadata(27.0, 0.85, 0.80, "trn-c"), now=T0 + timedelta(1)
    )
    v2 = register_model(
        store,
        layer=2,
        model_bytes=b"\x02" * 2000,
        metadata=_metadata(31.25, 0.88, 0.95, "trn-b"),
        now=T0 + timedelta(days=2),
    )
    return v1, v2, l1


def test_register_stores_weights_and_sidecar(store, registered):
    v1, _, _ = registered
    assert v1.model_id == "layer_2-20261122_143518"
    assert v1.key == "layer_2/restormer_layer2_20261122_143518.pt"
    assert store.get_bytes(MODELS, v1.key) == b"\x01" * 1000
    sidecar = json.loads(store.get_bytes(MODELS, "layer_2/restormer_layer2_20261122_143518.json"))
    assert sidecar["sha256"] == hashlib.sha256(b"\x01" * 1000).hexdigest()
    assert sidecar["size_bytes"] == 1000
    assert sidecar["job_id"] == "trn-a"
    assert sidecar["metrics"] == {"psnr": 30.0, "ssim": 0.90, "accuracy": 0.90}
    assert sidecar["spec"]["learning_rate"] == 0.0003
    assert sidecar["created_at"].startswith("2026-11-22T14:35:18")
    assert store.stat(MODELS, v1.key).sha256 == sidecar["sha256"]


def test_list_filter_versions_and_deltas(store, registered):
    v1, v2, l1 = registered
    all_models = list_models(store)
    assert [m.model_id for m in all_models] == [v2.model_id, l1.model_id, v1.model_id]
    layer2 = list_models(store, 2)
    assert [m.model_id for m in layer2] == [v2.model_id, v1.model_id]
    assert [m.version for m in layer2] == [2, 1]
    newest = layer2[0]
    assert newest.previous_model_id == v1.model_id
    assert newest.delta_vs_previous.psnr == pytest.approx(1.25)
    assert newest.delta_vs_previous.ssim == pytest.approx(-0.02)
    assert newest.delta_vs_previous.accuracy == pytest.approx(0.05)
    assert layer2[1].delta_vs_previous is None and layer2[1].previous_model_id == ""
    assert [m.model_id for m in list_models(store, 1)] == [l1.model_id]
    assert list_models(store, 7) == []


def test_get_previous_load(store, registered):
    v1, v2, l1 = registered
    assert get_model(store, v2.model_id) == v2
    assert get_model(store, l1.model_id).layer == 1
    assert previous_model(store, 2) == v2
    assert previous_model(store, 2, v2.model_id) == v1
    assert previous_model(store, 1, l1.model_id) is None
    assert load_model_bytes(store, v2.model_id) == b"\x02" * 2000


def test_not_found_and_malformed(store, registered):
    with pytest.raises(NotFound) as info:
        get_model(store, "layer_2-20200101_000000")
    assert "layer_2-20200101_000000" in str(info.value)
    with pytest.raises(NotFound):
        load_model_bytes(store, "layer_9-20200101_000000")
    for bad in ("layer_2", "model-1", "layer_2-20261122_143518/../x", "LAYER_2-20261122_143518"):
        with pytest.raises(InvalidArgument) as info:
            get_model(store, bad)
        assert info.value.field == "model_id"


def test_half_registered_model_is_not_listed(store, registered):
    store.put_bytes(MODELS, "layer_2/restormer_layer2_20261201_000000.pt", b"orphan")
    assert "layer_2-20261201_000000" not in {m.model_id for m in list_models(store, 2)}
    with pytest.raises(NotFound):
        get_model(store, "layer_2-20261201_000000")


def test_same_second_across_processes_gets_distinct_ids(s3_server, store, monkeypatch):
    # Separate clients and no in-process lock: only the claim objects in S3 keep them apart.
    monkeypatch.setattr(registry, "_reserve_lock", contextlib.nullcontext())
    now = datetime(2026, 12, 24, 18, 0, 0, tzinfo=UTC)
    barrier = threading.Barrier(4)
    ids: list[str] = []
    errors: list[BaseException] = []

    def register(i: int) -> None:
        own = ObjectStore(s3_server.settings())
        barrier.wait()
        try:
            info = register_model(own, layer=5, model_bytes=bytes([i]) * 100, metadata={"job_id": f"j{i}"}, now=now)
            ids.append(info.model_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    # Distinct ids of that second. Registrants that claimed the same id at once all step back, so
    # the suffixes may skip a number, but never repeat.
    assert len(set(ids)) == 4
    assert all(i == "layer_5-20261224_180000" or i.startswith("layer_5-20261224_180000-") for i in ids)
    assert sorted(m.model_id for m in list_models(store, 5)) == sorted(ids)
    for info in list_models(store, 5):
        data = load_model_bytes(store, info.model_id)
        assert data == bytes([int(info.job_id[1:])]) * 100  # each id holds its own registrant's weights


def test_save_report_to_training_outputs(store, registered):
    _, v2, _ = registered
    history = [
        EpochMetrics(e, 0.1 / e, 0.11 / e, Quality(26 + e, 0.8, 0.85), Quality(24.1, 0.7, 0.6), 1e-4, 2.0)
        for e in (1, 2, 3)
    ]
    inp = ReportInput(
        job_id="trn-b",
        layer=2,
        status="succeeded",
        spec={"num_epochs": 3, "batch_size": 2, "learning_rate": 3e-4},
        history=history,
        dataset=DatasetStats(10, 10, 10, 10, 0, 8, 2),
        model=ModelInfo("tiny", 25_042, v2.size_bytes, v2.model_id, v2.key),
        previous=previous_model(store, 2, v2.model_id).as_previous(),
    )
    report = build_report(inp)
    saved = save_report(store, report)
    assert saved.text.key == "reports/trn-b/report.txt"
    assert saved.json.key == "reports/trn-b/report.json"
    assert [(name, obj.key) for name, _title, obj in saved.plots] == [
        ("loss", "analysis/trn-b/loss.png"),
        ("psnr", "analysis/trn-b/psnr.png"),
        ("ssim", "analysis/trn-b/ssim.png"),
        ("accuracy", "analysis/trn-b/accuracy.png"),
    ]
    assert store.get_bytes(TRAINING_OUTPUTS, "reports/trn-b/report.txt").decode() == report.text
    assert json.loads(store.get_bytes(TRAINING_OUTPUTS, "reports/trn-b/report.json")) == report.json
    assert store.get_bytes(TRAINING_OUTPUTS, "analysis/trn-b/psnr.png")[:4] == b"\x89PNG"
    assert "Previous model: layer_2-20261122_143518 (job trn-a)" in report.text
