"""The Agent service end to end through the real gateway: it calls the real Text (built-in Gemma),
Image and Video (built-in tiny SD1.5 and motion adapter) servers directly. A character's three stages
stream in order, everything lands in the job's folder, the same request gives the same bytes, seed and
steps reach every stage, bad input is refused naming the field, and a cancel during the video stage
cancels the video job and keeps what the earlier stages stored."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from genmesh import errors
from genmesh.agent.v1 import agent_pb2
from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2
from servers.agent.types import SHEET_LIMITS
from servers.mesh.processes import wait_until
from tests.integration.helpers import sse

pytestmark = pytest.mark.integration

BODY = {
    "idea": "a lighthouse keeper who collects storms in jars",
    "style": "watercolor",
    "seed": 7,
    "steps": 4,
    "image": {"width": 64, "height": 64},
    "video": {"num_frames": 8},
}
STAGES = ["STAGE_TEXT", "STAGE_IMAGE", "STAGE_VIDEO"]


@pytest.fixture(scope="module")
def runs(gateway_url, api_key) -> list[list[dict]]:
    """The same character requested twice over REST/SSE."""
    results = []
    for _ in range(2):
        status, events = sse(gateway_url, api_key, "/v1/agent/character", BODY)
        assert status == 200, events
        results.append(events)
    return results


def test_rest_character_streams_three_stages_and_stores_everything(runs, object_store) -> None:
    events = runs[0]
    job_id = events[0]["job_id"]
    assert "queued" in events[0] and job_id.startswith("agt-")
    assert [e for e in events if {"result", "error", "cancelled"} & e.keys()] == [events[-1]]
    started = [e["stage_started"] for e in events if "stage_started" in e]
    assert [s["stage"] for s in started] == STAGES
    assert [s["sub_job_id"].split("-")[0] for s in started] == ["txt", "img", "vid"]
    finished = [e["stage_result"] for e in events if "stage_result" in e]
    assert [s["stage"] for s in finished] == STAGES
    kinds = [next(k for k in ("stage_started", "stage_progress", "stage_result") if k in e) for e in events
             if {"stage_started", "stage_progress", "stage_result"} & e.keys()]  # fmt: skip
    for stage in STAGES:  # each stage: started, its sub-job's progress, then its result
        positions = [i for i, e in enumerate(events) if stage in json.dumps(e.get("stage_started", {}))
                     or e.get("stage_progress", {}).get("stage") == stage
                     or e.get("stage_result", {}).get("stage") == stage]  # fmt: skip
        assert "stage_started" in events[positions[0]] and "stage_result" in events[positions[-1]]
        assert sum("stage_progress" in events[i] for i in positions) >= 2
    assert kinds.count("stage_started") == 3
    video_steps = [e["stage_progress"] for e in events if e.get("stage_progress", {}).get("stage") == "STAGE_VIDEO"]
    assert any(p.get("sub_stage") == "STAGE_DENOISING" and p["sub_progress"]["total_steps"] for p in video_steps)
    # Overall progress: weighted units, never going back, whole at the end, with an ETA on the way.
    overall = [e["progress"] for e in events if "progress" in e and "result" not in e]
    fractions = [p.get("fraction", 0.0) for p in overall]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any(p.get("eta_seconds", 0) > 0 for p in overall)
    assert len({p["total_steps"] for p in overall}) == 1

    result = events[-1]["result"]
    folder = result["sheet_artifact"]["key"].rsplit("/", 2)[0]
    for artifact in (result["sheet_artifact"], result["portrait"], result["video"]):
        assert artifact["bucket"] == "outputs" and artifact["key"].startswith(f"{folder}/{job_id}/")
    assert result["sheet_artifact"]["key"].endswith("/character.json")
    sheet = json.loads(object_store.get_bytes("outputs", result["sheet_artifact"]["key"]))
    assert list(sheet) == list(SHEET_LIMITS) and all(isinstance(value, str) for value in sheet.values())
    assert sheet["name"] and sheet["appearance_prompt"] and sheet["motion_prompt"]
    assert result["sheet"] == sheet  # the gateway prints every field, an empty negative_prompt too
    portrait = Image.open(io.BytesIO(object_store.get_bytes("outputs", result["portrait"]["key"])))
    assert result["portrait"]["key"].endswith("/portrait.png") and portrait.format == "PNG"
    assert portrait.size == (64, 64)
    video_data = object_store.get_bytes("outputs", result["video"]["key"])
    assert (
        result["video"]["key"].endswith("/video.gif")
        and hashlib.sha256(video_data).hexdigest() == (result["video"]["sha256"])
    )
    with Image.open(io.BytesIO(video_data)) as gif:
        assert gif.format == "GIF" and gif.n_frames == 8 and gif.size == (64, 64)

    # The job's one record: its Job, written before the result was sent, naming every sub-job.
    assert (result["record"]["bucket"], result["record"]["key"]) == ("outputs", f"jobs/{job_id}.json")
    record = json.loads(object_store.get_bytes("outputs", result["record"]["key"]))
    assert record["status"]["job_id"] == job_id and record["result"]["sheet"] == {k: v for k, v in sheet.items() if v}
    assert [s["sub_job_id"] for s in record["result"]["stages"]] == [s["sub_job_id"] for s in started]
    assert {name: record["result"][name]["key"] for name in ("sheet_artifact", "portrait", "video")} == {
        name: result[name]["key"] for name in ("sheet_artifact", "portrait", "video")
    }
    stored = [entry.key.rsplit("/", 1)[-1] for entry in object_store.list("outputs", f"{folder}/{job_id}/")]
    assert sorted(stored) == ["character.json", "portrait.png", "video.gif"]  # no second record in the folder
    assert result["parameters"] == {
        "seed": "7", "steps": 4, "stages": STAGES, "style": "watercolor", "idea": BODY["idea"]
    }  # fmt: skip


def test_seed_and_steps_reach_every_stage(runs, client: GenmeshClient, object_store) -> None:
    result = runs[0][-1]["result"]
    text_id, image_id, video_id = (stage["sub_job_id"] for stage in result["stages"])
    text = client.text.get_job(text_id).result
    image = client.images.get_job(image_id).result.parameters
    video = client.videos.get_job(video_id).result.parameters
    assert text.seed == 7 and (image.seed, image.steps) == (7, 4) and (video.seed, video.steps) == (7, 4)
    assert (image.width, image.height, video.num_frames) == (64, 64, 8)
    assert "watercolor" in image.prompt and video.init_media.key == result["portrait"]["key"]
    # Each sub-job's own record holds what it ran with.
    text_record, image_record, video_record = (
        json.loads(object_store.get_bytes("outputs", f"jobs/{sub_job_id}.json"))["result"]
        for sub_job_id in (text_id, image_id, video_id)
    )
    assert text_record["parameters"]["sampling"]["seed"] == "7" and text_record["parameters"]["messages"]
    assert image_record["parameters"]["seed"] == "7" and image_record["parameters"]["steps"] == 4
    assert video_record["parameters"]["seed"] == "7" and video_record["parameters"]["steps"] == 4


def test_the_same_request_gives_the_same_bytes(runs) -> None:
    first, second = (events[-1]["result"] for events in runs)
    assert first["record"]["key"] != second["record"]["key"]  # two jobs, two folders
    for name in ("sheet_artifact", "portrait", "video"):
        assert first[name]["sha256"] == second[name]["sha256"], name
    assert first["sheet"] == second["sheet"]


def test_get_job_lists_the_stages(runs, gateway_url, api_key) -> None:
    job_id = runs[0][0]["job_id"]
    with httpx.Client(base_url=gateway_url, headers={"x-api-key": api_key}, timeout=30) as http:
        job = http.get(f"/v1/agent/jobs/{job_id}").json()
    assert job["status"]["state"] == "JOB_STATE_SUCCEEDED" and job["status"]["progress"]["fraction"] == 1
    assert [stage["stage"] for stage in job["completed_stages"]] == STAGES
    assert job["result"]["video"]["key"] == runs[0][-1]["result"]["video"]["key"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"idea": ""}, "idea"),
        ({"idea": "x", "steps": 0}, "steps"),
        ({"idea": "x", "video": {"num_frames": 100}}, "video.num_frames"),
        ({"idea": "x", "stages": ["STAGE_TEXT", "STAGE_VIDEO"]}, "stages"),
    ],
)
def test_bad_input_is_400_naming_the_field(gateway_url, api_key, body, field) -> None:
    status, events = sse(gateway_url, api_key, "/v1/agent/character", body)
    assert status == 400 and events[0]["code"] == 3 and events[0]["message"].startswith(field)


@pytest.mark.parametrize(
    ("options", "field", "known"),
    [
        ({"text": {"model": "no-such-model"}}, "text.model", "available: "),
        ({"image": {"model": "no-such-model"}}, "image.model", "tiny-sd15"),
        ({"video": {"model": "no-such-model"}}, "video.model", "tiny-sd15"),
        ({"video": {"motion_adapter": "no-such-adapter"}}, "video.motion_adapter", "tiny-motion-adapter"),
    ],
)
def test_unknown_model_names_are_refused_before_queueing(gateway_url, api_key, options, field, known) -> None:
    status, events = sse(gateway_url, api_key, "/v1/agent/character", {"idea": "x", **options})
    assert status == 404 and len(events) == 1 and events[0]["code"] == 5, events
    assert events[0]["message"].startswith(f"{field}: unknown ") and known in events[0]["message"]


def test_a_failed_stage_names_itself_carries_its_code_and_lists_the_finished_stages(
    gateway_url, api_key, object_store
) -> None:
    # LoRA names are the services' to find (models and motion adapters are checked at submit).
    body = {**BODY, "video": {"num_frames": 8, "loras": [{"name": "no-such-lora"}]}}
    status, events = sse(gateway_url, api_key, "/v1/agent/character", body)
    assert status == 200 and "error" in events[-1] and not any("result" in e for e in events)
    error = events[-1]["error"]
    assert error["code"] == "NOT_FOUND" and error["stage"] == "STAGE_VIDEO"
    assert "video stage failed" in error["message"] and "no-such-lora" in error["message"]
    kept = error["completed_stages"]
    assert [stage["stage"] for stage in kept] == ["STAGE_TEXT", "STAGE_IMAGE"]
    assert all(object_store.exists("outputs", stage["artifact"]["key"]) for stage in kept)


def test_stop_after_the_text_stage(client: GenmeshClient) -> None:
    result = client.agent.create_character("a tired dragon", seed=3, stages=["text"], text={"max_tokens": 768})
    assert result.sheet.name and result.sheet_artifact.key.endswith("/character.json")
    assert not result.HasField("portrait") and not result.HasField("video") and len(result.stages) == 1


def test_cancel_during_the_video_stage_cancels_it_and_keeps_the_sheet_and_portrait(
    client: GenmeshClient, object_store
) -> None:
    events: list = []
    failures: list = []

    def run() -> None:
        try:
            for event in client.agent.stream_create_character(
                "a knight made of clockwork", seed=5, steps=3, image={"width": 128, "height": 128},
                video={"num_frames": 32, "steps": 150},
            ):  # fmt: skip
                events.append(event)
        except errors.GenmeshError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(
        lambda: (
            not thread.is_alive()
            or any(
                e.WhichOneof("event") == "stage_progress"
                and e.stage_progress.stage == agent_pb2.STAGE_VIDEO
                and e.stage_progress.sub_progress.step >= 1
                for e in events
            )
        ),
        timeout=300,
        what="the video stage to start denoising",
    )
    assert thread.is_alive(), failures
    job_id = events[0].job_id
    video_id = next(e.stage_started.sub_job_id for e in events if e.stage_started.stage == agent_pb2.STAGE_VIDEO)
    client.agent.cancel_job(job_id)
    thread.join(120)
    assert not thread.is_alive() and isinstance(failures[0], errors.Cancelled)
    last = events[-1]
    assert last.WhichOneof("event") == "cancelled" and last.cancelled.stage == agent_pb2.STAGE_VIDEO
    kept = last.cancelled.completed_stages
    assert [stage.stage for stage in kept] == [agent_pb2.STAGE_TEXT, agent_pb2.STAGE_IMAGE]
    for stage in kept:
        assert object_store.exists("outputs", stage.artifact.key)
    wait_until(
        lambda: client.videos.get_job(video_id).status.state == job_pb2.JOB_STATE_CANCELLED,
        timeout=60,
        what="the video sub-job to be cancelled",
    )
    assert client.videos.get_job(video_id).status.progress.step < 150
    job = client.agent.get_job(job_id)
    assert job.status.state == job_pb2.JOB_STATE_CANCELLED and len(job.completed_stages) == 2


def test_cli_character_writes_the_sheet_portrait_and_animation(mesh, tmp_path) -> None:
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
    cli = str(Path(sys.executable).parent / "genmesh")
    out = tmp_path / "elf"
    argv = [cli, "character", "a night elf ranger", "--seed", "7", "--steps", "3", "-o", str(out),
            "--width", "64", "--height", "64", "--frames", "8"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == ["character.json", "portrait.png", "video.gif"]
    sheet = json.loads((out / "character.json").read_text(encoding="utf-8"))
    assert set(SHEET_LIMITS) <= set(sheet) and sheet["name"] in done.stdout
    assert Image.open(out / "portrait.png").size == (64, 64)
    with Image.open(out / "video.gif") as gif:
        assert gif.n_frames == 8
    for argv, field in (([cli, "character", " "], "idea"), ([cli, "character", "x", "--steps", "0"], "steps")):
        bad = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert bad.returncode == 2 and field in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
