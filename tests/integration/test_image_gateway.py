"""The Image service end to end through the real gateway with the built-in tiny SD1.5-shaped model:
REST/SSE, gRPC, the CLI, img2img, determinism, cancel, and bad input."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from genmesh import errors
from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2
from servers.mesh.processes import wait_until
from tests.integration.helpers import png_bytes, sse

pytestmark = pytest.mark.integration


def test_rest_txt2img_streams_progress_and_stores_a_png(gateway_url, api_key, object_store) -> None:
    body = {"prompt": "a lighthouse", "width": 64, "height": 96, "steps": 6, "seed": 7, "preview_interval_steps": 2}
    status, events = sse(gateway_url, api_key, "/v1/images:generate", body)
    assert status == 200
    assert "queued" in events[0] and events[0]["job_id"].startswith("img-")
    steps = [e for e in events if e.get("progress_update", {}).get("stage") == "STAGE_DENOISING" and "progress" in e]
    assert len(steps) >= 6 and all("eta_seconds" in e["progress"] for e in steps)
    previews = [e["progress"]["preview"] for e in steps if e["progress"].get("preview", {}).get("data")]
    assert previews and previews[0]["content_type"] == "image/webp"
    result = events[-1]["result"]
    artifact = result["images"][0]["artifact"]
    assert artifact["bucket"] == "outputs" and artifact["key"].split("/")[1] == events[0]["job_id"]
    data = object_store.get_bytes("outputs", artifact["key"])
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (64, 96)
    assert "Seed: 7" in image.info["parameters"] and "Steps: 6" in image.info["parameters"]
    assert result["parameters"]["scheduler"] != "SCHEDULER_UNSPECIFIED"


def test_rest_img2img_with_png_init_image(gateway_url, api_key, object_store) -> None:
    body = {
        "prompt": "a red square",
        "init_image_data": base64.b64encode(png_bytes(96, 64)).decode(),
        "strength": 0.5,
        "steps": 8,
        "seed": 3,
        "output_format": "IMAGE_FORMAT_WEBP",
    }
    status, events = sse(gateway_url, api_key, "/v1/images:generate", body)
    assert status == 200, events
    result = events[-1]["result"]
    params = result["parameters"]
    assert (params["width"], params["height"]) == (96, 64)  # the init image's size
    assert params["init_image"]["key"].endswith("/init.png")
    assert object_store.exists("outputs", params["init_image"]["key"])
    stored = object_store.get_bytes("outputs", result["images"][0]["artifact"]["key"])
    assert Image.open(io.BytesIO(stored)).format == "WEBP"


def test_grpc_same_seed_gives_identical_bytes_and_batches(client: GenmeshClient) -> None:
    options = {"width": 64, "height": 64, "steps": 4, "seed": 1234, "return_inline": True}
    events = list(client.images.stream_generate("a cat", **options))
    first = events[-1].result
    second = client.images.generate("a cat", **options)
    assert first.images[0].artifact.data and first.images[0].artifact.data == second.images[0].artifact.data
    # The job itself (GetJob, its record) names the stored image, never repeats the inline bytes.
    recorded = client.images.get_job(events[0].job_id).result.images[0].artifact
    assert not recorded.data and recorded.key == first.images[0].artifact.key
    assert first.images[0].artifact.sha256 == second.images[0].artifact.sha256
    batch = client.images.generate("a cat", num_images=2, scheduler="euler_a", **options)
    assert [image.seed for image in batch.images] == [1234, 1235]
    assert batch.parameters.scheduler != 0
    # Image i of a batch is reproduced alone with seed + i: the same noise, so the same picture up to
    # the rounding of batched kernels.
    alone = client.images.generate("a cat", scheduler="euler_a", **{**options, "seed": 1235})
    pixels = [Image.open(io.BytesIO(item.artifact.data)).tobytes() for item in (alone.images[0], batch.images[1])]
    assert max(abs(a - b) for a, b in zip(*pixels, strict=True)) <= 3


def test_cancel_mid_run_stores_nothing(client: GenmeshClient, object_store) -> None:
    events: list = []
    failures: list = []

    def run() -> None:
        try:
            for event in client.images.stream_generate("slow", width=256, height=256, steps=150, seed=1):
                events.append(event)
        except errors.GenmeshError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: any(e.progress.step >= 2 for e in events), timeout=120, what="denoising to start")
    job_id = events[0].job_id
    client.images.cancel_job(job_id)
    thread.join(60)
    assert events[-1].WhichOneof("event") == "cancelled" and isinstance(failures[0], errors.Cancelled)
    job = client.images.get_job(job_id)
    assert job.status.state == job_pb2.JOB_STATE_CANCELLED and job.status.progress.step < 150
    assert not [entry for entry in object_store.list("outputs") if f"/{job_id}/" in entry.key]


def test_a_detached_job_is_watched_by_id_over_grpc_and_sse(client: GenmeshClient, gateway_url, api_key) -> None:
    stream = client.images.stream_generate("a boat", width=64, height=64, steps=6, seed=3, detach=True)
    job_id = next(stream).job_id
    stream.close()  # detached: the job runs on without its client
    events = list(client.images.watch(job_id))  # replayed so far, then live until the end
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "queued" and kinds[-1] == "result" and "progress_update" in kinds, kinds
    assert all(event.job_id == job_id for event in events) and events[-1].result.images[0].artifact.key
    status, replayed = sse(gateway_url, api_key, f"/v1/images/jobs/{job_id}:watch", None, method="GET")
    assert (
        status == 200
        and replayed[-1]["result"]["images"][0]["artifact"]["key"] == events[-1].result.images[0].artifact.key
    )
    with pytest.raises(errors.NotFound, match="not found"):
        list(client.images.watch("img-0-0000000000000000000000ff"))


BAD_INPUTS = [
    ({"prompt": "x", "width": 100}, "width"),
    ({"prompt": "x", "height": 4096}, "height"),
    ({"prompt": "x", "steps": 0}, "steps"),
    ({"prompt": "x", "guidance_scale": 31}, "guidance_scale"),
    ({"prompt": "x", "num_images": 9}, "num_images"),
    ({"prompt": "x", "strength": 0.5}, "strength"),
    ({"prompt": " "}, "prompt"),
    ({"prompt": "x", "quality": 0, "output_format": "IMAGE_FORMAT_JPEG"}, "quality"),
    ({"prompt": "x", "init_image_data": base64.b64encode(b"not an image at all").decode()}, "init_image_data"),
    ({"prompt": "x", "init_image_data": base64.b64encode(png_bytes(20000, 20000, "1")).decode()}, "init_image_data"),
]


@pytest.mark.parametrize(("body", "field"), BAD_INPUTS)
def test_bad_input_is_400_naming_the_field(gateway_url, api_key, body, field) -> None:
    status, events = sse(gateway_url, api_key, "/v1/images:generate", body)
    assert status == 400, events
    assert events[0]["code"] == 3 and field in events[0]["message"]


def test_unknown_model_is_404_and_server_stays_healthy(gateway_url, api_key, client) -> None:
    status, events = sse(gateway_url, api_key, "/v1/images:generate", {"prompt": "x", "model": "nope"})
    assert status == 404 and "model" in events[0]["message"] and "tiny-sd15" in events[0]["message"]
    assert client.images.generate("still alive", width=64, height=64, steps=2).images


def test_list_models_labels_the_smoke_test_model(client) -> None:
    models = client.images.list_models()
    tiny = next(model for model in models if model.name == "tiny-sd15")
    assert tiny.labels["smoke_test"] == "true" and tiny.is_default and "noise" in tiny.description
    defaults = tiny.defaults  # light ones: the smoke-test model finishes in seconds on a CPU
    assert (defaults.width, defaults.height, defaults.steps) == (256, 256, 8) and "smoke-test" in defaults.note


def test_cli_image_writes_the_file(mesh, tmp_path: Path) -> None:
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
    out = tmp_path / "out.png"
    cli = str(Path(sys.executable).parent / "genmesh")
    done = subprocess.run(
        [cli, "image", "a cat", "-o", str(out), "--width", "64", "--height", "64", "--steps", "3", "--seed", "5"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (64, 64) and "seed 5" in done.stdout and "note:" not in done.stderr
    argv = [cli, "image", "a cat", "-o", str(out), "--width", "64", "--height", "64", "--seed", "5"]
    defaulted = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert "note: light defaults for the smoke-test model: 8 steps" in defaulted.stderr, defaulted.stderr
    bad = subprocess.run([cli, "image", "x", "--width", "65"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "width" in bad.stderr and "Traceback" not in bad.stderr
