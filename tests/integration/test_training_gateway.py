"""The Training service end to end through the real gateway and S3 server, on CPU with the tiny
preset: synthetic data -> a training job -> per-epoch metrics -> report, plots and a registered
model -> ListModels -> RestoreImage beats the degraded input. Plus resume after a crash, cancel,
queueing and bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from genmesh import errors
from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import ManagedProcess, free_port, wait_until

pytestmark = pytest.mark.integration

# Denoising is what a tiny model learns in seconds on a CPU.
DATA = {"num_images": 24, "width": 96, "height": 96, "degradation_type": "gaussian-noise", "seed": 11,
        "content_kinds": ["CONTENT_KIND_TEXTURES", "CONTENT_KIND_SHAPES"]}  # fmt: skip
SPEC = {"num_epochs": 6, "batch_size": 4, "patch_size": 48, "architecture": "ARCHITECTURE_TINY",
        "learning_rate": 0.003, "seed": 5}  # fmt: skip


def http(gateway_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway_url, headers={"x-api-key": api_key}, timeout=300)


def sse(client: httpx.Client, method: str, path: str, **kwargs) -> list[dict]:
    with client.stream(method, path, **kwargs) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def psnr(a: bytes, b: bytes) -> float:
    x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"), dtype=np.float64) / 255
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.float64) / 255
    return float(10 * np.log10(1 / np.mean((x - y) ** 2)))


@pytest.fixture(scope="module")
def dataset(gateway_url, api_key) -> dict:
    with http(gateway_url, api_key) as client:
        events = sse(client, "POST", "/v1/training/synthetic-data:generate", json={**DATA, "dataset_name": "itest"})
    assert "queued" in events[0] and events[-1]["state"] == "JOB_STATE_SUCCEEDED"
    assert any(e.get("progress", {}).get("step") for e in events)
    return events[-1]["result"]


def test_rest_flow_train_watch_report_models_restore(gateway_url, api_key, dataset, object_store) -> None:
    assert dataset["pair_count"] == 24 and object_store.exists("synthetic-data", dataset["manifest"]["key"])
    prefix = dataset["dataset_prefix"]
    with http(gateway_url, api_key) as client:
        created = client.post("/v1/training/jobs", json={"layer": 7, "dataset_prefix": prefix, **SPEC})
        assert created.status_code == 200, created.text
        job = created.json()
        assert job["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING") and job["spec"]["seed"] == "5"
        job_id = job["job_id"]
        events = sse(client, "GET", f"/v1/training/jobs/{job_id}:watch")
        epochs = [e["epoch_completed"] for e in events if "epoch_completed" in e]
        assert [e["epoch"] for e in epochs] == list(range(1, 7))
        assert all("baseline" in e and e["validation"]["psnr"] > 0 for e in epochs)
        assert events[-1]["state"] == "JOB_STATE_SUCCEEDED"
        model_id = events[-1]["result"]["model_id"]
        assert model_id.startswith("layer_7-")

        report = client.get(f"/v1/training/jobs/{job_id}/report").json()
        for section in ("PARAMETERS", "DATA", "METRICS PER EPOCH", "TOTAL IMPROVEMENT", "MODEL", "ENVIRONMENT",
                        "RECOMMENDATIONS"):  # fmt: skip
            assert section in report["text"]
        assert set(report["data"]) >= {"job", "parameters", "data", "epochs", "improvement", "model", "recommendations"}
        assert {plot["name"] for plot in report["plots"]} >= {"loss", "psnr"}
        for plot in report["plots"]:
            assert object_store.get_bytes("training-outputs", plot["artifact"]["key"])[:4] == b"\x89PNG"
        assert object_store.exists("training-outputs", report["text_artifact"]["key"])

        models = client.get("/v1/training/models", params={"layer": 7}).json()["models"]
        assert models[0]["model_id"] == model_id and models[0]["version"] == 1
        assert object_store.exists("models", models[0]["artifact"]["key"])
        assert models[0]["artifact"]["key"].startswith("layer_7/restormer_layer7_")

        # A held-out degraded image restored by the model is closer to its clean original.
        name = f"{prefix}00023"
        clean = object_store.get_bytes("training-data", f"clean/{name}.png")
        degraded = object_store.get_bytes("training-data", f"degraded/{name}.png")
        body = {"image_data": base64.b64encode(degraded).decode(), "tile_size": 64, "tile_overlap": 16,
                "return_inline": True}  # fmt: skip
        restored_events = sse(client, "POST", f"/v1/training/models/{model_id}:restore", json=body)
        result = restored_events[-1]["result"]
        restored = base64.b64decode(result["image"]["data"])
        assert result["tile_count"] == 4 and (result["width"], result["height"]) == (96, 96)
        gain = psnr(restored, clean) - psnr(degraded, clean)
        print(f"restore PSNR gain over the degraded input: {gain:+.2f} dB")
        assert gain > 0.3

        evaluation = client.post(f"/v1/training/models/{model_id}:evaluate", json={"dataset_prefix": prefix}).json()
        assert evaluation["pair_count"] == 24 and evaluation["improvement"]["psnr"] > 0


def test_grpc_second_job_waits_then_cancel_keeps_checkpoint(client: GenmeshClient, dataset) -> None:
    prefix = dataset["dataset_prefix"]
    spec = {"layer": 8, "dataset_prefix": prefix, "num_epochs": 200, "batch_size": 4, "patch_size": 48,
            "architecture": "tiny", "seed": 1}  # fmt: skip
    first = client.training.create_job(**spec)
    second = client.training.create_job(**spec)
    assert second.state == job_pb2.JOB_STATE_QUEUED
    wait_until(lambda: client.training.get_job(first.job_id).current_epoch >= 1, timeout=120, what="an epoch")
    queued = client.training.get_job(second.job_id)
    assert queued.state == job_pb2.JOB_STATE_QUEUED and queued.queue_position == 0
    client.training.cancel_job(second.job_id)
    assert client.training.get_job(second.job_id).state == job_pb2.JOB_STATE_CANCELLED
    client.training.cancel_job(first.job_id)
    wait_until(lambda: client.training.get_job(first.job_id).state == job_pb2.JOB_STATE_CANCELLED, timeout=60,
               what="the cancel")  # fmt: skip
    cancelled = client.training.get_job(first.job_id)
    assert cancelled.checkpoint.key.endswith(f"checkpoints/{first.job_id}/last.pt")
    assert cancelled.current_epoch >= 1 and cancelled.current_epoch < 200
    listed = client.training.list_jobs(state=job_pb2.JOB_STATE_CANCELLED, layer=8)
    assert {job.job_id for job in listed.training_jobs} == {first.job_id, second.job_id}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"layer": 0}, "layer"),
        ({"layer": 1, "num_epochs": 0}, "num_epochs"),
        ({"layer": 1, "batch_size": 0}, "batch_size"),
        ({"layer": 1, "learning_rate": 0}, "learning_rate"),
        ({"layer": 1, "patch_size": 20}, "patch_size"),
        ({"layer": 1, "validation_split": 0.9}, "validation_split"),
        ({"layer": 1, "dataset_prefix": "nothing-here_"}, "dataset_prefix"),
    ],
)
def test_bad_training_input_is_400_naming_the_field(gateway_url, api_key, dataset, body, field) -> None:
    with http(gateway_url, api_key) as client:
        response = client.post("/v1/training/jobs", json={"dataset_prefix": dataset["dataset_prefix"], **body})
    assert response.status_code == 400, response.text
    assert field in response.json()["message"]


def test_unknown_ids_and_presets(gateway_url, api_key) -> None:
    with http(gateway_url, api_key) as client:
        assert client.get("/v1/training/jobs/trn-0000000000000000").status_code == 404
        assert client.get("/v1/training/models", params={"layer": 100}).status_code == 400
        bad = client.post("/v1/training/synthetic-data:generate", json={"degradation_type": "sepia"})
        assert bad.status_code == 400 and "degradation_type" in bad.json()["message"]
        missing = client.post("/v1/training/models/layer_3-20200101_000000:restore", json={"image_data": "AAAA"})
        assert missing.status_code == 404
        for params in ({"page_token": "\u00b2"}, {"page_token": "9" * 5000}, {"layer": 100}):
            bad_page = client.get("/v1/training/jobs", params=params)
            assert bad_page.status_code == 400, (params, bad_page.text)
        evaluate = client.post("/v1/training/models/layer_3-20200101_000000:evaluate", json={"dataset_prefix": "../x"})
        assert evaluate.status_code == 400 and "dataset_prefix" in evaluate.json()["message"]


def test_cli_train_and_report(mesh, dataset, tmp_path: Path) -> None:
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
    cli = str(Path(sys.executable).parent / "genmesh")
    done = subprocess.run(
        [cli, "train", "--layer", "9", "--dataset-prefix", dataset["dataset_prefix"], "--epochs", "2",
         "--patch-size", "48", "--architecture", "tiny", "--seed", "2"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    job_id = lines[0].split()[1]
    assert "PSNR" in lines[1] and lines[2].split()[0] == "1" and lines[3].split()[0] == "2"
    assert "registered" in done.stdout
    shown = subprocess.run([cli, "report", job_id, "--plots-dir", str(tmp_path)], capture_output=True, text=True,
                           timeout=60, env=env, check=True)  # fmt: skip
    assert "TRAINING REPORT - LAYER 9" in shown.stdout and (tmp_path / "loss.png").exists()
    # genmesh restore with the model just registered: the task's id at once, the file written.
    model_id = next(line.split()[1] for line in lines if line.startswith("model "))
    Image.new("RGB", (80, 72), (120, 60, 200)).save(tmp_path / "noisy.png")
    restored = subprocess.run([cli, "restore", model_id, "noisy.png", "-o", "clean.webp"], capture_output=True,
                              text=True, timeout=120, env=env, cwd=tmp_path)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert restored.stderr.startswith("job tsk-") and "80x72" in restored.stdout
    assert Image.open(tmp_path / "clean.webp").size == (80, 72)


@pytest.fixture(scope="module")
def training_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own (S3, Training, Envoy), shared by the two tests that stop its training server
    (the supervisor, or the test, starts it again): one start-up instead of one each."""
    data_dir = tmp_path_factory.mktemp("training-mesh") / "data"
    mesh = Mesh(LaunchOptions(port=free_port(), services=("training",), data_dir=data_dir,
                              service_args={"training": ["--threads", "1"]})).start()  # fmt: skip
    try:
        yield mesh
    finally:
        mesh.stop()


def test_killed_server_resumes_the_job_from_its_checkpoint(training_mesh: Mesh) -> None:
    mesh = training_mesh
    with GenmeshClient(mesh.url, mesh.api_key) as client:
        data = client.training.generate_synthetic_data(
            num_images=12, width=96, height=96, degradation_type="gaussian-noise", seed=3
        )
        job = client.training.create_job(
            layer=4, dataset_prefix=data.dataset_prefix, num_epochs=8, patch_size=48, architecture="tiny",
            batch_size=2, seed=9,
        )  # fmt: skip
        wait_until(lambda: client.training.get_job(job.job_id).current_epoch >= 2, timeout=120, what="2 epochs")
        server = mesh.servers["training"]
        restarts = mesh.supervisor.restarts("training")
        os.kill(server.pid, signal.SIGKILL)  # a crash: no drain, no goodbye
        # genmesh up's supervisor starts it again on the same port; it resumes the job at start.
        wait_until(lambda: mesh.supervisor.restarts("training") == restarts + 1, timeout=30, what="the restart")
        wait_until(
            lambda: client.training.get_job(job.job_id).state == job_pb2.JOB_STATE_SUCCEEDED,
            timeout=300, what="the resumed job to finish", process=server,
        )  # fmt: skip
        finished = client.training.get_job(job.job_id)
        assert finished.resumed_count == 1 and finished.model_id
        assert [epoch.epoch for epoch in finished.history] == list(range(1, 9))
        watched = list(client.training.watch(job.job_id))
        kinds = [event.WhichOneof("event") for event in watched]
        assert "resumed" in kinds and kinds[-1] == "result"
        # Everything happened before this Watch (the result may still be arriving live).
        assert all(event.replayed for event in watched[:-1])
        assert "Resumed from checkpoint: 1 time" in client.training.get_report(job.job_id).text


def test_user_pairs_unpaired_and_unreadable_files_are_counted_and_skipped(client, dataset, object_store) -> None:
    source = dataset["dataset_prefix"]
    for index in range(3):  # three good pairs under the user's own names
        for folder in ("clean", "degraded"):
            data = object_store.get_bytes("training-data", f"{folder}/{source}{index:05d}.png")
            object_store.put_bytes("training-data", f"{folder}/mine_{index}.png", data, "image/png")
    object_store.put_bytes("training-data", "clean/mine_lonely.png", b"no partner", "image/png")
    object_store.put_bytes("training-data", "clean/mine_broken.png", b"not a png", "image/png")
    object_store.put_bytes("training-data", "degraded/mine_broken.png", b"not a png either", "image/png")
    job = client.training.create_job(
        layer=11, dataset_prefix="mine_", num_epochs=1, patch_size=48, architecture="tiny", validation_split=0.3
    )
    wait_until(lambda: client.training.get_job(job.job_id).state == job_pb2.JOB_STATE_SUCCEEDED, timeout=120,
               what="the job on user pairs")  # fmt: skip
    stats = client.training.get_job(job.job_id).dataset
    assert (stats.clean_files, stats.degraded_files, stats.pairs_found) == (5, 4, 4)
    assert (stats.pairs_used, stats.skipped_pairs) == (3, 1)
    assert stats.train_pairs + stats.validation_pairs == 3


def test_a_cancelled_job_continues_as_a_new_job_from_its_checkpoint(client, dataset) -> None:
    spec = {"layer": 12, "dataset_prefix": dataset["dataset_prefix"], "num_epochs": 12, "batch_size": 2,
            "patch_size": 48, "architecture": "tiny", "seed": 4}  # fmt: skip
    first = client.training.create_job(**spec)
    wait_until(lambda: client.training.get_job(first.job_id).current_epoch >= 1, timeout=120, what="an epoch")
    client.training.cancel_job(first.job_id)
    wait_until(lambda: client.training.get_job(first.job_id).state == job_pb2.JOB_STATE_CANCELLED, timeout=60,
               what="the cancel")  # fmt: skip
    done = client.training.get_job(first.job_id).current_epoch
    with pytest.raises(errors.InvalidArgument, match="only num_epochs"):
        client.training.create_job(resume_job_id=first.job_id, **{**spec, "batch_size": 8})
    second = client.training.create_job(resume_job_id=first.job_id, **{**spec, "num_epochs": 13})
    assert second.resumed_from_job_id == first.job_id and second.spec.num_epochs == 13
    wait_until(lambda: client.training.get_job(second.job_id).state == job_pb2.JOB_STATE_SUCCEEDED, timeout=180,
               what="the continued job")  # fmt: skip
    finished = client.training.get_job(second.job_id)
    assert [epoch.epoch for epoch in finished.history] == list(range(1, 14))
    assert finished.history[done - 1] == client.training.get_job(first.job_id).history[done - 1]


def test_sigterm_stops_training_at_once_and_the_next_start_resumes_it(training_mesh: Mesh) -> None:
    mesh = training_mesh
    with GenmeshClient(mesh.url, mesh.api_key) as client:
        data = client.training.generate_synthetic_data(num_images=12, width=96, height=96, seed=8)
        job = client.training.create_job(
            layer=5, dataset_prefix=data.dataset_prefix, num_epochs=40, patch_size=48, architecture="tiny",
            batch_size=2,
        )  # fmt: skip
        wait_until(lambda: client.training.get_job(job.job_id).current_epoch >= 1, timeout=120, what="an epoch")
        server = mesh.servers["training"]
        server.stop(timeout=30)  # SIGTERM: a drain that does not wait for 40 epochs
        assert server.returncode() == 0
        restarted = ManagedProcess(server.name, server.argv, log_path=server.log_path, env=server.env).start()
        mesh.servers["training"] = restarted
        mesh.supervisor.watch(restarted)  # as genmesh up would: the module's other test kills it
        wait_until(lambda: client.training.get_job(job.job_id).resumed_count == 1, timeout=120,
                   what="the next start to resume it", process=restarted)  # fmt: skip
        # It trains on from its checkpoint: an epoch after the one it resumed from. (Where a resumed
        # job ends, and its history, the killed-server test above checks: this one stops here.)
        resumed = None
        for event in client.training.watch(job.job_id):
            kind = event.WhichOneof("event")
            assert kind not in ("result", "error", "cancelled"), event
            if kind == "resumed":
                resumed = event.resumed
            elif kind == "epoch_completed" and resumed and event.epoch_completed.epoch > resumed.from_epoch:
                break
        assert resumed and resumed.reason == "server shutting down" and resumed.resumed_count == 1
        client.training.cancel_job(job.job_id)
        wait_until(lambda: client.training.get_job(job.job_id).state == job_pb2.JOB_STATE_CANCELLED, timeout=60,
                   what="the cancel")  # fmt: skip
        assert client.training.get_job(job.job_id).resumed_count == 1
