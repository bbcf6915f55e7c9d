"""Model registry logic against an in-memory stand-in for ObjectStore (the real S3 server is in
tests/integration/test_training_registry.py): ids, keys, versions, deltas, collisions, errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from genmesh.errors import Internal, InvalidArgument, NotFound
from servers.training import registry
from servers.training.registry import (
    ModelRef,
    get_model,
    list_models,
    load_model_bytes,
    model_keys,
    parse_model_id,
    previous_model,
    register_model,
    reserve_model_id,
)
from servers.training.types import Quality
from storage.buckets import MODELS
from storage.keys import validate_key
from storage.object_store import ObjectEntry, StoredObject

T0 = datetime(2026, 11, 22, 14, 35, 18, tzinfo=UTC)


class MemoryStore:
    """The parts of ObjectStore the registry uses, with S3 listing semantics."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.lock = threading.Lock()
        self.puts: list[str] = []

    def put_bytes(self, bucket, key, data, content_type="application/octet-stream", metadata=None):
        validate_key(key)
        with self.lock:
            self.objects[(bucket, key)] = bytes(data)
            self.puts.append(key)
        return StoredObject(bucket, key, f"http://127.0.0.1/{key}", content_type, len(data), _sha(data))

    def get_bytes(self, bucket, key):
        with self.lock:
            if (bucket, key) not in self.objects:
                raise NotFound(f"object {bucket}/{key} does not exist")
            return self.objects[(bucket, key)]

    def exists(self, bucket, key):
        with self.lock:
            return (bucket, key) in self.objects

    def delete(self, bucket, key):
        with self.lock:
            self.objects.pop((bucket, key), None)

    def list(self, bucket, prefix="", recursive=True) -> Iterator[ObjectEntry]:
        with self.lock:
            keys = sorted(k for b, k in self.objects if b == bucket and k.startswith(prefix))
            sizes = {k: len(self.objects[(bucket, k)]) for k in keys}
        seen = set()
        for key in keys:
            rest = key[len(prefix) :]
            if not recursive and "/" in rest:
                folder = prefix + rest.split("/", 1)[0] + "/"
                if folder not in seen:
                    seen.add(folder)
                    yield ObjectEntry(folder, 0, True)
                continue
            yield ObjectEntry(key, sizes[key])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata(psnr: float, ssim: float = 0.9, accuracy: float = 0.9, job: str = "trn-1") -> dict:
    return {
        "job_id": job,
        "architecture": "small",
        "parameter_count": 1_042_211,
        "dataset_prefix": "synthetic_",
        "best_epoch": 8,
        "metrics": {"psnr": psnr, "ssim": ssim, "accuracy": accuracy},
        "baseline": {"psnr": 24.1, "ssim": 0.7, "accuracy": 0.6},
        "validation_loss": 0.03,
        "spec": {"layer": 2, "num_epochs": 8, "batch_size": 2},
    }


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def test_ids_and_keys():
    ref = parse_model_id("layer_2-20261122_143518")
    assert ref == ModelRef("20261122_143518", 1, 2)
    assert ref.model_id == "layer_2-20261122_143518"
    assert ref.time == T0.replace(second=18, minute=35, hour=14)
    assert model_keys("layer_2-20261122_143518") == (
        "layer_2/restormer_layer2_20261122_143518.pt",
        "layer_2/restormer_layer2_20261122_143518.json",
    )
    assert model_keys("layer_12-20261122_143518-3") == (
        "layer_12/restormer_layer12_20261122_143518-3.pt",
        "layer_12/restormer_layer12_20261122_143518-3.json",
    )
    assert parse_model_id("layer_2-20261122_143518-2") > parse_model_id("layer_2-20261122_143518")
    assert parse_model_id("layer_2-20261122_143519") > parse_model_id("layer_2-20261122_143518-9")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "layer_2",
        "layer_0-20261122_143518",
        "layer_100-20261122_143518",
        "layer_02-20261122_143518",
        "Layer_2-20261122_143518",
        "layer_2-20261122-143518",
        "layer_2-2026112_143518",
        "layer_2-20261122_143518-1",  # the first model of a second has no suffix
        "layer_2-20261122_143518-",
        "layer_2-20261322_143518",  # month 13
        "layer_2-20261122_246000",
        "../layer_2-20261122_143518",
        "layer_2-20261122_143518.pt",
    ],
)
def test_malformed_ids(bad, store):
    with pytest.raises(InvalidArgument) as info:
        parse_model_id(bad)
    assert info.value.field == "model_id"
    with pytest.raises(InvalidArgument) as info:
        get_model(store, bad)
    assert info.value.field == "model_id"


def test_register_writes_weights_then_metadata(store):
    info = register_model(store, layer=2, model_bytes=b"weights-1", metadata=metadata(30.0), now=T0)
    assert info.model_id == "layer_2-20261122_143518"
    assert (info.version, info.previous_model_id, info.delta_vs_previous) == (1, "", None)
    assert info.key == "layer_2/restormer_layer2_20261122_143518.pt"
    data_keys = [k for k in store.puts if "/.claims/" not in k]
    assert data_keys == [info.key, "layer_2/restormer_layer2_20261122_143518.json"]
    sidecar = json.loads(store.get_bytes(MODELS, info.metadata_key))
    assert sidecar["sha256"] == _sha(b"weights-1") == info.sha256
    assert sidecar["size_bytes"] == 9 == info.size_bytes
    assert sidecar["created_at"] == "2026-11-22T14:35:18.000000Z"
    assert sidecar["model_id"] == info.model_id and sidecar["layer"] == 2
    assert sidecar["spec"] == {"layer": 2, "num_epochs": 8, "batch_size": 2}
    assert (info.job_id, info.architecture, info.parameter_count, info.best_epoch) == ("trn-1", "small", 1_042_211, 8)
    assert info.metrics == Quality(30.0, 0.9, 0.9) and info.baseline == Quality(24.1, 0.7, 0.6)
    assert info.validation_loss == 0.03
    json.dumps(info.to_dict(), allow_nan=False)


def test_versions_deltas_and_order(store):
    a = register_model(store, layer=2, model_bytes=b"a", metadata=metadata(30.0, 0.90, 0.90), now=T0)
    c = register_model(store, layer=1, model_bytes=b"c", metadata=metadata(28.0), now=T0 + timedelta(seconds=5))
    b = register_model(store, layer=2, model_bytes=b"b", metadata=metadata(31.5, 0.88, 0.95), now=T0 + timedelta(1))
    assert b.version == 2 and b.previous_model_id == a.model_id
    assert b.delta_vs_previous.psnr == pytest.approx(1.5)
    assert b.delta_vs_previous.ssim == pytest.approx(-0.02)
    assert b.delta_vs_previous.accuracy == pytest.approx(0.05)
    assert c.version == 1 and c.previous_model_id == ""
    assert [m.model_id for m in list_models(store)] == [b.model_id, c.model_id, a.model_id]
    assert [m.model_id for m in list_models(store, 0)] == [b.model_id, c.model_id, a.model_id]
    assert [m.model_id for m in list_models(store, 2)] == [b.model_id, a.model_id]
    assert list_models(store, 3) == []
    assert get_model(store, b.model_id) == b
    assert previous_model(store, 2) == b
    assert previous_model(store, 2, b.model_id) == a
    assert previous_model(store, 2, a.model_id) is None
    assert previous_model(store, 2, "layer_2-20991231_235959") == b  # need not exist
    assert previous_model(store, 5) is None
    prev = b.as_previous()
    assert (prev.model_id, prev.metrics, prev.job_id) == (b.model_id, b.metrics, "trn-1")


def test_same_second_gets_suffixes(store):
    ids = [register_model(store, layer=2, model_bytes=bytes([i]), metadata={}, now=T0).model_id for i in range(3)]
    assert ids == ["layer_2-20261122_143518", "layer_2-20261122_143518-2", "layer_2-20261122_143518-3"]
    assert [m.model_id for m in list_models(store, 2)] == ids[::-1]
    assert [m.version for m in list_models(store, 2)] == [3, 2, 1]
    assert load_model_bytes(store, ids[1]) == b"\x01"
    # another time zone, the same instant: still a new id
    other = T0.astimezone(timezone(timedelta(hours=-5)))
    assert register_model(store, layer=2, model_bytes=b"z", metadata={}, now=other).model_id.endswith("-4")


def test_concurrent_registrations_in_separate_processes_never_collide(store, monkeypatch):
    # Without the in-process lock, only the claim objects keep registrants apart.
    monkeypatch.setattr(registry, "_reserve_lock", contextlib.nullcontext())
    barrier = threading.Barrier(6)
    ids: list[str] = []
    errors: list[BaseException] = []

    def register(i: int) -> None:
        barrier.wait()
        try:
            ids.append(register_model(store, layer=2, model_bytes=bytes([i]) * 10, metadata={}, now=T0).model_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(set(ids)) == 6
    models = list_models(store, 2)
    assert sorted(m.model_id for m in models) == sorted(ids)
    for m in models:  # each id's weights are its own registrant's
        assert len(set(load_model_bytes(store, m.model_id))) == 1


def test_half_registered_model_is_invisible_and_its_id_not_reused(store):
    weights_key, _ = model_keys("layer_2-20261122_143518")
    store.put_bytes(MODELS, weights_key, b"orphan")  # died before writing metadata
    assert list_models(store, 2) == []
    with pytest.raises(NotFound, match="layer_2-20261122_143518"):
        get_model(store, "layer_2-20261122_143518")
    with pytest.raises(NotFound, match="layer_2-20261122_143518"):
        load_model_bytes(store, "layer_2-20261122_143518")
    info = register_model(store, layer=2, model_bytes=b"w", metadata={}, now=T0)
    assert info.model_id == "layer_2-20261122_143518-2"
    assert info.version == 1


def test_metadata_without_weights_or_unreadable_is_skipped(store):
    a = register_model(store, layer=2, model_bytes=b"a", metadata=metadata(30.0), now=T0)
    b = register_model(store, layer=2, model_bytes=b"b", metadata=metadata(31.0), now=T0 + timedelta(seconds=1))
    c = register_model(store, layer=2, model_bytes=b"c", metadata=metadata(33.0), now=T0 + timedelta(seconds=2))
    store.delete(MODELS, b.key)
    store.put_bytes(MODELS, "layer_2/unrelated.txt", b"x")
    models = list_models(store, 2)
    assert [m.model_id for m in models] == [c.model_id, a.model_id]
    assert models[0].version == 2 and models[0].previous_model_id == a.model_id
    assert models[0].delta_vs_previous.psnr == pytest.approx(3.0)
    store.put_bytes(MODELS, c.metadata_key, b"{not json")
    assert [m.model_id for m in list_models(store, 2)] == [a.model_id]


def test_get_and_load_errors(store):
    with pytest.raises(NotFound) as info:
        get_model(store, "layer_3-20261122_143518")
    assert "layer_3-20261122_143518" in str(info.value)
    info_a = register_model(store, layer=3, model_bytes=b"weights", metadata={}, now=T0)
    assert load_model_bytes(store, info_a.model_id) == b"weights"
    store.put_bytes(MODELS, info_a.key, b"tampered")
    with pytest.raises(Internal, match="sha256"):
        load_model_bytes(store, info_a.model_id)
    assert load_model_bytes(store, info_a.model_id, verify=False) == b"tampered"
    store.delete(MODELS, info_a.key)
    with pytest.raises(NotFound, match="weights"):
        load_model_bytes(store, info_a.model_id)


def test_register_validation(store):
    for layer in (0, 100, -1, True, "2"):
        with pytest.raises(InvalidArgument) as info:
            register_model(store, layer=layer, model_bytes=b"x", metadata={}, now=T0)
        assert info.value.field == "layer"
    with pytest.raises(InvalidArgument) as info:
        register_model(store, layer=2, model_bytes=b"", metadata={}, now=T0)
    assert info.value.field == "model_bytes"
    for bad in ({"x": float("nan")}, {"x": object()}, ["not", "a", "mapping"]):
        with pytest.raises(InvalidArgument) as info:
            register_model(store, layer=2, model_bytes=b"x", metadata=bad, now=T0)
        assert info.value.field == "metadata"
    with pytest.raises(ValueError, match="timezone"):
        register_model(store, layer=2, model_bytes=b"x", metadata={}, now=datetime(2026, 1, 1))
    assert store.objects == {}  # nothing written by a rejected call
    for layer in (-1, 100, True):
        with pytest.raises(InvalidArgument) as info:
            list_models(store, layer)
        assert info.value.field == "layer"
    with pytest.raises(InvalidArgument) as info:
        previous_model(store, 2, "layer_3-20261122_143518")
    assert info.value.field == "before_id"
    with pytest.raises(InvalidArgument) as info:
        previous_model(store, 2, "nope")
    assert info.value.field == "before_id"


def test_reserved_metadata_keys_are_the_registrys(store):
    info = register_model(
        store, layer=2, model_bytes=b"abc", metadata={"sha256": "forged", "size_bytes": 1, "job_id": "j"}, now=T0
    )
    assert info.sha256 == _sha(b"abc") and info.size_bytes == 3 and info.job_id == "j"


def test_reserve_model_id_skips_taken_suffixes(store):
    assert reserve_model_id(store, 4, T0).model_id == "layer_4-20261122_143518"
    assert reserve_model_id(store, 4, T0).model_id == "layer_4-20261122_143518-2"
    assert reserve_model_id(store, 4, T0 + timedelta(seconds=1)).model_id == "layer_4-20261122_143519"


def test_a_claim_by_another_process_wins_the_race(store, monkeypatch):
    # Another registrant claimed the id after our look at the taken ids, before our claim.
    foreign = ModelRef("20261122_143518", 1, 2).claims_prefix + "another-process"
    monkeypatch.setattr(registry, "_taken_suffixes", lambda *args: set())
    store.put_bytes(MODELS, foreign, b"")
    info = register_model(store, layer=2, model_bytes=b"w", metadata={}, now=T0)
    assert info.model_id == "layer_2-20261122_143518-2"
    claims = [e.key for e in store.list(MODELS, "layer_2/.claims/")]
    assert len(claims) == 2 and foreign in claims  # ours for the first id was withdrawn, ours for -2 stays
    assert any(key.startswith("layer_2/.claims/restormer_layer2_20261122_143518-2/") for key in claims)
