"""The Video service end to end through the real gateway with the built-in tiny SD1.5 and motion
adapter: REST/SSE, gRPC, grpcurl, the CLI, image- and video-to-video, long clips, determinism,
cancel, and bad input."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import av
import pytest
from PIL import Image

from genmesh import errors
from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2, model_pb2
from genmesh.video.v1 import video_pb2
from servers.mesh.processes import wait_until
from tests.integration.helpers import png_bytes, sse

pytestmark = pytest.mark.integration

SMALL = {"width": 64, "height": 64, "steps": 4, "num_frames": 8}


def gif_frames(data: bytes) -> list[Image.Image]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "GIF"
        frames = []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(image.convert("RGB"))
        return frames


def test_rest_text_to_video_streams_progress_and_stores_a_gif(gateway_url, api_key, object_store) -> None:
    body = {"prompt": "waves on a beach", **SMALL, "seed": 7, "fps": 10, "preview_interval_steps": 2}
    status, events = sse(gateway_url, api_key, "/v1/videos:generate", body)
    assert status == 200, events
    assert "queued" in events[0] and events[0]["job_id"].startswith("vid-")
    stages = [e["progress_update"].get("stage") for e in events if "progress_update" in e]
    assert stages.index("STAGE_DENOISING") < stages.index("STAGE_DECODING") < stages.index("STAGE_ENCODING")
    assert stages.index("STAGE_ENCODING") < stages.index("STAGE_SAVING")
    steps = [e for e in events if e.get("progress_update", {}).get("stage") == "STAGE_DENOISING" and "progress" in e]
    assert len(steps) >= 4 and all("eta_seconds" in e["progress"] for e in steps)
    assert any(e["progress"].get("preview", {}).get("content_type") == "image/webp" for e in steps)
    decoding = [e["progress_update"] for e in events if e.get("progress_update", {}).get("stage") == "STAGE_DECODING"]
    assert decoding[-1]["frames_decoded"] == decoding[-1]["total_frames"] == 8 and len(decoding) > 2
    result = events[-1]["result"]
    video = result["video"]
    assert video["bucket"] == "outputs" and video["key"].split("/")[1] == events[0]["job_id"]
    assert video["key"].endswith("/video.gif") and video["content_type"] == "image/gif"
    data = object_store.get_bytes("outputs", video["key"])
    assert hashlib.sha256(data).hexdigest() == video["sha256"]
    frames = gif_frames(data)
    assert len(frames) == 8 and frames[0].size == (64, 64)
    assert Image.open(io.BytesIO(data)).info["comment"].decode().startswith("waves on a beach")
    assert result["num_frames"] == 8 and result["fps"] == 10 and result["duration_seconds"] == pytest.approx(0.8)
    params = result["parameters"]
    assert params["scheduler"] == "SCHEDULER_DDIM" and params["task"] == "VIDEO_TASK_TEXT_TO_VIDEO"
    assert params["motion_adapter"] == "tiny-motion-adapter" and params["seed"] == "7"
    poster = Image.open(io.BytesIO(object_store.get_bytes("outputs", result["poster"]["key"])))
    assert poster.format == "PNG" and "Motion adapter: tiny-motion-adapter" in poster.info["parameters"]
    record = json.loads(object_store.get_bytes("outputs", result["record"]["key"]))["result"]
    assert record["video"]["sha256"] == video["sha256"] and record["parameters"]["num_frames"] == 8


def test_grpc_mp4_is_playable_and_same_seed_gives_identical_bytes(client: GenmeshClient) -> None:
    options = {**SMALL, "seed": 99, "return_inline": True}
    first = client.videos.generate("a candle", output_format="mp4", **options)
    assert first.video.content_type == "video/mp4" and first.video.key.endswith("/video.mp4")
    with av.open(io.BytesIO(first.video.data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert len(list(container.decode(stream))) == 8
    gif_a = client.videos.generate("a candle", **options)
    gif_b = client.videos.generate("a candle", **options)
    assert gif_a.video.data == gif_b.video.data and gif_a.video.sha256 == gif_b.video.sha256
    assert gif_a.poster.data and len(gif_a.frames) == 0


def test_long_clip_runs_with_context_windows(client: GenmeshClient) -> None:
    result = client.videos.generate("a river", width=64, height=64, steps=3, num_frames=24, seed=1)
    assert result.num_frames == 24
    assert (result.parameters.context_length, result.parameters.context_stride) == (16, 4)
    short = client.videos.generate("a river", **SMALL, seed=1)
    assert short.parameters.context_length == 0


def test_image_to_video_from_an_image_result_and_video_to_video(client: GenmeshClient, object_store) -> None:
    portrait = client.images.generate("a portrait", width=96, height=64, steps=3, seed=2)
    ref = (portrait.images[0].artifact.bucket, portrait.images[0].artifact.key)
    animated = client.videos.generate("the portrait blinks", init_image_ref=ref, steps=5, num_frames=8, seed=3)
    params = animated.parameters
    assert params.task == video_pb2.VIDEO_TASK_IMAGE_TO_VIDEO and (params.width, params.height) == (96, 64)
    assert params.strength == pytest.approx(0.8) and params.init_media.key == ref[1]
    assert len(gif_frames(object_store.get_bytes("outputs", animated.video.key))) == 8

    inline = client.videos.generate("a red square", init_image=png_bytes(64, 64), steps=4, num_frames=8, seed=4)
    assert inline.parameters.init_media.key.endswith("/init.png")

    source = object_store.get_bytes("outputs", animated.video.key)
    restyled = client.videos.generate("night", init_video=source, strength=0.5, steps=4, seed=5, save_frames=True)
    assert restyled.parameters.task == video_pb2.VIDEO_TASK_VIDEO_TO_VIDEO and restyled.num_frames == 8
    assert [frame.key.rsplit("/", 1)[1] for frame in restyled.frames] == [f"{i:04d}.png" for i in range(8)]


def test_prompt_travel(client: GenmeshClient) -> None:
    result = client.videos.generate("day", prompt_schedule={4: "night"}, **SMALL, seed=6)
    assert dict(result.parameters.prompt_schedule) == {4: "night"} and result.parameters.context_length == 8


def test_cancel_mid_run_stores_nothing(client: GenmeshClient, object_store) -> None:
    events: list = []
    failures: list = []

    def run() -> None:
        try:
            for event in client.videos.stream_generate("slow", width=128, height=128, steps=150, num_frames=32, seed=1):
                events.append(event)
        except errors.GenmeshError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: any(e.progress.step >= 1 for e in events), timeout=180, what="denoising to start")
    job_id = events[0].job_id
    client.videos.cancel_job(job_id)
    thread.join(120)
    assert events[-1].WhichOneof("event") == "cancelled" and isinstance(failures[0], errors.Cancelled)
    job = client.videos.get_job(job_id)
    assert job.status.state == job_pb2.JOB_STATE_CANCELLED and job.status.progress.step < 150
    assert not [entry for entry in object_store.list("outputs") if f"/{job_id}/" in entry.key]


def _gif(frames: int, side: int) -> bytes:
    buffer = io.BytesIO()
    # Distinct frames: encoders merge identical neighbours into one longer frame.
    images = [Image.new("RGB", (side, side), (i % 256, (i // 256) * 90, 0)) for i in range(frames)]
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_INPUTS = [
    ({"prompt": "x", "width": 100}, "width"),
    ({"prompt": "x", "height": 2048}, "height"),
    ({"prompt": "x", "num_frames": 1}, "num_frames"),
    ({"prompt": "x", "num_frames": 65}, "num_frames"),
    ({"prompt": "x", "fps": 0}, "fps"),
    ({"prompt": "x", "steps": 151}, "steps"),
    ({"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
    ({"prompt": "x", "strength": 0.5}, "strength"),
    ({"prompt": "x", "init_image_data": b64(png_bytes()), "strength": 0}, "strength"),
    ({"prompt": " "}, "prompt"),
    ({"prompt": "x", "num_frames": 8, "prompt_schedule": {"8": "late"}}, "prompt_schedule"),
    ({"prompt": "x", "prompt_schedule": {"2": " "}}, "prompt_schedule"),
    ({"prompt": "x", "init_image_data": b64(b"not an image")}, "init_image_data"),
    ({"prompt": "x", "init_video_data": b64(b"not a video")}, "init_video_data"),
    ({"prompt": "x", "init_video_data": b64(_gif(300, 8))}, "init_video_data"),
    ({"prompt": "x", "init_video_data": b64(_gif(2, 4096))}, "init_video_data"),
    ({"prompt": "x", "init_video_data": b64(_gif(4, 64)), "num_frames": 8}, "num_frames"),
    ({"prompt": "x", "init_image_ref": {"bucket": "outputs", "key": "no/such.png"}}, "init_image_ref"),
    ({"prompt": "x", "width": 1024, "height": 1024, "num_frames": 64}, "num_frames"),
]


@pytest.mark.parametrize(("body", "field"), BAD_INPUTS)
def test_bad_input_is_refused_naming_the_field(gateway_url, api_key, body, field) -> None:
    status, events = sse(gateway_url, api_key, "/v1/videos:generate", body)
    assert status in (400, 404), events
    assert field in events[0]["message"]


def test_unknown_names_are_404_and_the_server_stays_healthy(gateway_url, api_key, client) -> None:
    status, events = sse(gateway_url, api_key, "/v1/videos:generate", {"prompt": "x", "model": "nope"})
    assert status == 404 and "model" in events[0]["message"] and "tiny-sd15" in events[0]["message"]
    status, events = sse(gateway_url, api_key, "/v1/videos:generate", {"prompt": "x", "motion_adapter": "nope"})
    assert status == 404 and "motion_adapter" in events[0]["message"]
    assert client.videos.generate("still alive", **SMALL).num_frames == 8


def test_list_models_lists_base_models_and_motion_adapters(client) -> None:
    models = {model.name: model for model in client.videos.list_models()}
    base, adapter = models["tiny-sd15"], models["tiny-motion-adapter"]
    assert base.labels["kind"] == "base" and adapter.labels["kind"] == "motion_adapter"
    assert base.is_default and adapter.is_default and adapter.labels["smoke_test"] == "true"
    assert "noise" in base.description
    assert (base.defaults.width, base.defaults.num_frames, base.defaults.steps) == (128, 8, 4)  # light ones
    assert "smoke-test" in base.defaults.note and not adapter.HasField("defaults")
    # Loaded at start or not yet (preload off, keep-alive): the state says which, as `loaded` does.
    for model in (base, adapter):
        loaded = model_pb2.MODEL_STATE_LOADED if model.loaded else model_pb2.MODEL_STATE_LOADS_ON_FIRST_USE
        assert model.state == loaded, model


def test_grpcurl_streams_a_video(mesh) -> None:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"
    body = json.dumps({"prompt": "grpcurl", **SMALL, "seed": 3})
    done = subprocess.run(
        [grpcurl, "-plaintext", "-H", f"x-api-key: {mesh.api_key}", "-d", body, mesh.url,
         "genmesh.video.v1.VideoService/GenerateVideo"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert '"job_id": "vid-' in done.stdout and '"video": {' in done.stdout


def test_cli_video_writes_the_file(mesh, tmp_path: Path) -> None:
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
    cli = str(Path(sys.executable).parent / "genmesh")
    out = tmp_path / "clip.mp4"
    argv = [cli, "video", "a cat", "-o", str(out), "--frames", "8", "--fps", "8", "--width", "64", "--height", "64",
            "--steps", "3", "--seed", "5"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    assert "vid-" in done.stdout + done.stderr
    with av.open(str(out)) as container:
        assert len(list(container.decode(video=0))) == 8
    init = tmp_path / "portrait.png"
    init.write_bytes(png_bytes(64, 64))
    gif = tmp_path / "moving.gif"
    argv = [cli, "video", "moving", "-o", str(gif), "--frames", "8", "--steps", "3", "--init-image", str(init)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    assert len(gif_frames(gif.read_bytes())) == 8
    assert "note: light defaults for the smoke-test model: 64x64 (set them" in done.stderr  # the input's size
    bad = subprocess.run([cli, "video", "x", "--frames", "99"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--frames: num_frames" in bad.stderr  # the flag typed, beside the API field
