"""Model pull through the real gateway (issue #23): the CLI pulls the built-in GGUF from a loopback
HTTP server by URL + sha256 and `genmesh text --model tiny` uses it at once; the same through REST
(SSE); a pulled SD1.5 single file and motion module generate an image and a video by name; a flipped
byte is refused with both digests, leaving nothing listed; a key that is not admin gets
PERMISSION_DENIED; a models server killed mid-download resumes after a restart, and a pull cancelled
by id installs nothing. Dropped connections, stalls, HTML, pickles and hf: folders are covered
against the same HTTP server in tests/unit/test_model_pull.py (no mesh needed)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from genmesh import errors
from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2
from genmesh.models.v1 import models_pb2
from servers.mesh.launcher import Mesh, health_status
from servers.mesh.processes import ManagedProcess, free_port, wait_until
from servers.text.models import BUILTIN_NAME
from storage.object_store import ObjectStore
from tests.integration.helpers import add_keys
from tests.support.model_server import FileServer

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "genmesh")


@pytest.fixture(scope="module")
def origin(mesh: Mesh) -> Iterator[FileServer]:
    """The built-in Gemma GGUF (the Text server assembled it at start) served as /tiny.gguf."""
    gguf = (mesh.data_dir / "models" / "text" / f"{BUILTIN_NAME}.gguf").read_bytes()
    served = FileServer(files={"/tiny.gguf": gguf}).start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def user_key(mesh: Mesh) -> str:
    """An ordinary (not admin) key added to the session mesh's keys file."""
    return add_keys(mesh, {"pull-user": ""})["pull-user"]


def test_cli_pull_lands_in_text_and_generates_by_name(mesh, client, origin) -> None:
    digest = hashlib.sha256(origin.files["/tiny.gguf"]).hexdigest()
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
    done = subprocess.run(
        [CLI, "pull", origin.url(f"/tiny.gguf#sha256={digest}")], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    landed = mesh.data_dir / "models" / "text" / "tiny.gguf"
    assert str(landed) in done.stdout and digest in done.stdout and "text model 'tiny'" in done.stdout
    assert "tiny" in [model.name for model in client.text.list_models()]  # listed at once, no restart
    text = [CLI, "text", "Once upon a time", "--model", "tiny", "--max-tokens", "4", "--json"]
    generated = subprocess.run(text, capture_output=True, text=True, timeout=120, env=env)
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout.splitlines()[-1])["result"]["model"] == "tiny"
    # Pulled again: the same file is there, nothing is fetched.
    fetched = len(origin.log)
    again = client.models.pull(origin.url(f"/tiny.gguf#sha256={digest}"))
    assert again.already_present and len(origin.log) == fetched
    removed = subprocess.run([CLI, "models", "rm", "tiny"], capture_output=True, text=True, timeout=60, env=env)
    assert removed.returncode == 0 and str(landed) in removed.stdout, removed.stderr
    assert "tiny" not in [model.name for model in client.text.list_models()]


def sse(mesh: Mesh, path: str, body: dict) -> list[dict]:
    headers = {"x-api-key": mesh.api_key}
    with httpx.stream("POST", f"http://{mesh.url}{path}", json=body, headers=headers, timeout=300) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: ")]


def test_rest_pull_then_rest_generation_by_name(mesh, origin) -> None:
    digest = hashlib.sha256(origin.files["/tiny.gguf"]).hexdigest()
    events = sse(mesh, "/v1/models:pull", {"ref": origin.url(f"/tiny.gguf#sha256={digest}"), "name": "tiny-rest"})
    ticks = [event["pull_progress"] for event in events if "pull_progress" in event]
    ticks = [tick for tick in ticks if tick["phase"] == "PULL_PHASE_DOWNLOAD"]
    assert ticks and ticks[-1]["bytes_done"] == ticks[-1]["bytes_total"] == str(len(origin.files["/tiny.gguf"]))
    result = events[-1]["result"]
    assert result["kind"] == "MODEL_KIND_TEXT" and result["path"].endswith("/models/text/tiny-rest.gguf")
    # A pull is a job like any other: GET /v1/jobs lists it beside the other services' jobs.
    listed = httpx.get(f"http://{mesh.url}/v1/jobs", params={"service": "models"}, headers={"x-api-key": mesh.api_key})
    assert listed.status_code == 200 and listed.json()["unavailable"] == [], listed.text
    assert events[0]["job_id"] in [job["status"]["job_id"] for job in listed.json()["jobs"]]
    generated = sse(mesh, "/v1/text:generate", {"prompt": "Hi", "model": "tiny-rest", "sampling": {"max_tokens": 2}})
    assert generated[-1]["result"]["model"] == "tiny-rest"
    deleted = httpx.post(
        f"http://{mesh.url}/v1/models:delete", json={"name": "tiny-rest"}, headers={"x-api-key": mesh.api_key}
    )
    assert deleted.status_code == 200 and deleted.json()["kind"] == "MODEL_KIND_TEXT"
    # A host the operator did not allow is refused before anything is queued (no job, no traffic).
    refused = httpx.post(f"http://{mesh.url}/v1/models:pull", json={"ref": "https://example.invalid/x.gguf"},
                         headers={"x-api-key": mesh.api_key})  # fmt: skip
    assert refused.status_code == 400 and "may fetch from" in refused.json()["message"], refused.text


def test_rest_pull_streams_sse_and_a_flipped_byte_is_refused_with_both_digests(mesh, client, origin) -> None:
    good = b"GGUF" + os.urandom(200_000)
    flipped = bytearray(good)
    flipped[100_000] ^= 0x01
    origin.files["/flipped.gguf"] = bytes(flipped)
    expected, got = hashlib.sha256(good).hexdigest(), hashlib.sha256(flipped).hexdigest()
    events = sse(mesh, "/v1/models:pull", {"ref": origin.url(f"/flipped.gguf#sha256={expected}")})
    assert "queued" in events[0] and events[0]["job_id"].startswith("pul-")
    phases = [event["pull_progress"]["phase"] for event in events if "pull_progress" in event]
    assert phases[0] == "PULL_PHASE_RESOLVE" and "PULL_PHASE_VERIFY" in phases
    error = events[-1]["error"]
    assert error["code"] == "INVALID_ARGUMENT" and expected in error["message"] and got in error["message"]
    assert "flipped" not in [model.name for model in client.text.list_models()]
    job = client.models.get_job(events[0]["job_id"])  # a pull is a job like any other
    assert job.status.error.code == "INVALID_ARGUMENT"


@pytest.fixture(scope="module")
def tiny_single_files(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A tiny SD1.5 and a tiny motion module as the single files users download (no config beside
    them: the servers derive it from the weights' shapes)."""
    from tests.support.single_file import save_motion_adapter_single_file, save_single_file
    from tests.support.tiny_models import tiny_motion_adapter, tiny_sd15

    folder = tmp_path_factory.mktemp("tiny-single-files")
    tokenizer_cache = mesh.data_dir / "cache" / "diffusion"  # the CLIP tokenizer the servers built at start
    checkpoint = save_single_file(tiny_sd15(tokenizer_cache), folder / "sd15.safetensors")
    adapter = save_motion_adapter_single_file(tiny_motion_adapter(), folder / "motion.safetensors")
    return {"pulled-sd15": checkpoint.read_bytes(), "pulled-motion": adapter.read_bytes()}


def test_pulled_checkpoints_land_by_kind_and_generate_by_name(client, origin, tiny_single_files) -> None:
    """An SD1.5 single file lands where Image and Video read models, a motion module where Video reads
    adapters; both are listed at once and generate by name (64x64, 2 steps, 2 frames)."""
    for name, data in tiny_single_files.items():
        origin.files[f"/{name}.safetensors"] = data
    digest = hashlib.sha256(tiny_single_files["pulled-sd15"]).hexdigest()
    try:
        sd15 = client.models.pull(origin.url(f"/pulled-sd15.safetensors#sha256={digest}"))
        motion = client.models.pull(origin.url("/pulled-motion.safetensors"), no_verify=True)
        assert (sd15.kind, sd15.family, sd15.verified) == (models_pb2.MODEL_KIND_IMAGE, "sd15", True)
        assert (motion.kind, motion.family, motion.verified) == (models_pb2.MODEL_KIND_MOTION, "v2", False)
        assert "pulled-sd15" in [model.name for model in client.images.list_models()]
        videos = {model.name: model.labels["kind"] for model in client.videos.list_models()}
        assert videos["pulled-sd15"] != "motion_adapter" and videos["pulled-motion"] == "motion_adapter"
        image = client.images.generate("a lighthouse", model="pulled-sd15", width=64, height=64, steps=2, seed=1)
        assert (image.parameters.model, image.parameters.model_family, len(image.images)) == ("pulled-sd15", "sd15", 1)
        video = client.videos.generate(
            "a lighthouse", model="pulled-sd15", motion_adapter="pulled-motion", width=64, height=64, num_frames=2,
            steps=2, seed=1,
        )  # fmt: skip
        assert (video.parameters.model, video.parameters.motion_adapter) == ("pulled-sd15", "pulled-motion")
        assert video.num_frames == 2 and video.video.size_bytes > 0
    finally:
        for name in tiny_single_files:  # the shared mesh's default image model is its first user one: leave none
            with contextlib.suppress(errors.NotFound):
                client.models.delete(name)
    assert "pulled-sd15" not in [model.name for model in client.images.list_models()]


def start_node(
    mesh: Mesh, data_dir: Path, service: str, *flags: str, env: dict[str, str] | None = None
) -> tuple[ManagedProcess, int]:
    """A server as on a machine of its own: its own data folder, sharing only the mesh's object store."""
    port = free_port()
    argv = [sys.executable, "-m", "servers", service, f"--port={port}", "--threads=1", *flags]
    env = {**mesh.service_env(), "GENMESH_DATA_DIR": str(data_dir), **(env or {})}
    process = ManagedProcess(f"{service}-node", argv, log_path=data_dir / f"{service}.log", env=env).start()
    try:
        wait_until(lambda: health_status(port) == 1, timeout=180, what=f"the {service} node", process=process)
    except BaseException:
        process.stop()
        raise
    return process, port


@pytest.fixture
def cluster_node(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., int]]:
    """Starts servers as on their own machines (``start_node``); stops them after the test."""
    started: list[ManagedProcess] = []

    def start(service: str, *flags: str) -> int:
        data_dir = tmp_path_factory.mktemp(f"{service}-node")
        if service == "text":  # its built-in model, without assembling a copy
            builtin = mesh.data_dir / "models" / "text" / f"{BUILTIN_NAME}.gguf"
            (data_dir / "models" / "text").mkdir(parents=True)
            (data_dir / "models" / "text" / builtin.name).symlink_to(builtin)
        process, port = start_node(mesh, data_dir, service, *flags)
        started.append(process)
        return port

    yield start
    for process in started:
        process.stop()


def test_a_killed_models_server_resumes_after_a_restart_and_a_cancel_installs_nothing(
    mesh, origin, tmp_path_factory
) -> None:
    """The models server dies (SIGKILL) mid-download: started again on the same disk, the next pull
    of the reference resumes with Range + If-Range. A pull cancelled by id (CancelJob) installs nothing."""
    data_dir = tmp_path_factory.mktemp("models-restart")
    staging, text_dir = data_dir / "models" / ".staging", data_dir / "models" / "text"
    body = b"GGUF" + os.urandom(3_000_000)
    origin.files["/restart.gguf"] = origin.files["/cancel.gguf"] = body
    ref = origin.url(f"/restart.gguf#sha256={hashlib.sha256(body).hexdigest()}")
    flags = ("--pull-allowed-hosts=http://127.0.0.1", "--pull-stall-seconds=60")

    def partial_bytes() -> int:
        return sum(path.stat().st_size for path in staging.glob("*.part")) if staging.is_dir() else 0

    origin.stall_after["/restart.gguf"] = 1_000_000
    process, port = start_node(mesh, data_dir, "models", *flags)
    try:
        with GenmeshClient(f"127.0.0.1:{port}", "unused") as node:
            events = node.models.stream_pull(ref, detach=True)
            assert next(events).HasField("queued")
            wait_until(lambda: partial_bytes() >= 900_000, timeout=60, what="the first megabyte on disk")
            process.kill()  # a crash mid-download: nothing but the disk remains
            with contextlib.suppress(errors.GenmeshError):
                list(events)
        origin.release.set()  # let the stalled response end
        kept = partial_bytes()
        process, port = start_node(mesh, data_dir, "models", *flags)
        with GenmeshClient(f"127.0.0.1:{port}", "unused") as node:
            pulled = node.models.pull(ref)
            assert pulled.resumed_bytes == kept and (text_dir / "restart.gguf").read_bytes() == body
            resumed = [entry for entry in origin.log if entry.path == "/restart.gguf" and entry.range]
            assert [(entry.range, entry.if_range, entry.status) for entry in resumed] == [
                (f"bytes={kept}-", FileServer.etag(body), 206)
            ]
            origin.release.clear()
            origin.stall_after["/cancel.gguf"] = 500_000
            events = node.models.stream_pull(origin.url("/cancel.gguf"), no_verify=True)
            job_id = next(events).job_id
            wait_until(lambda: partial_bytes() >= 400_000, timeout=60, what="the cancelled pull's first bytes")
            node.models.cancel_job(job_id)
            with pytest.raises(errors.Cancelled):
                list(events)
            assert sorted(path.name for path in text_dir.iterdir()) == ["restart.gguf"]
            assert node.models.get_job(job_id).status.state == job_pb2.JOB_STATE_CANCELLED
    finally:
        origin.release.set()
        process.stop()


def test_hf_folders_land_in_the_mesh_catalogs_and_generate_a_video(mesh, client, origin, tmp_path_factory) -> None:
    """hf: references to a diffusers pipeline folder (the repo) and a MotionAdapter folder (a folder in
    it), from the loopback hub fake (HF_ENDPOINT), pulled by a models server writing into the mesh's
    folders: Image and Video list them at once and Video generates with both by name."""
    from servers.diffusion.builtin import tiny_motion_adapter_folder, tiny_sd15_folder
    from tests.support.model_server import folder_files

    cache = mesh.data_dir / "cache" / "diffusion"  # the servers built these at start: reused, not rebuilt
    origin.hf_repos["org/tiny-sd"] = {
        **folder_files(tiny_sd15_folder(cache)),
        **folder_files(tiny_motion_adapter_folder(cache), "motion/"),
    }
    models = mesh.data_dir / "models"
    process, port = start_node(
        mesh, tmp_path_factory.mktemp("models-hf"), "models", "--pull-allowed-hosts=http://127.0.0.1",
        f"--image-models-dir={models / 'image'}", f"--motion-adapters-dir={models / 'motion'}",
        env={"HF_ENDPOINT": origin.url(""), "HF_HUB_OFFLINE": "0"},
    )  # fmt: skip
    try:
        with GenmeshClient(f"127.0.0.1:{port}", "unused") as node:
            base = node.models.pull("hf:org/tiny-sd", name="hf-tiny-sd")
            adapter = node.models.pull("hf:org/tiny-sd/motion", name="hf-tiny-motion")
        assert (base.kind, base.family, base.path) == (
            models_pb2.MODEL_KIND_IMAGE, "sd15", str(models / "image" / "hf-tiny-sd")
        )  # fmt: skip
        assert (adapter.kind, adapter.digest_source, adapter.verified) == (
            models_pb2.MODEL_KIND_MOTION,
            "huggingface",
            True,
        )
        assert "hf-tiny-sd" in [model.name for model in client.images.list_models()]
        video = client.videos.generate(
            "a lighthouse", model="hf-tiny-sd", motion_adapter="hf-tiny-motion", width=64, height=64, num_frames=2,
            steps=2, seed=1,
        )  # fmt: skip
        assert (video.parameters.model, video.parameters.motion_adapter, video.num_frames) == (
            "hf-tiny-sd", "hf-tiny-motion", 2
        )  # fmt: skip
    finally:
        process.stop()
        for name in ("hf-tiny-sd", "hf-tiny-motion"):  # the shared mesh's default image model: leave none
            with contextlib.suppress(errors.NotFound):
                client.models.delete(name)
    assert "hf-tiny-sd" not in [model.name for model in client.images.list_models()]


def test_a_server_with_its_own_disk_fetches_a_pulled_model_from_the_store(mesh, origin, cluster_node) -> None:
    """Clusters: a models server with --pull-to-store also publishes to the models bucket; a Text server
    whose disk is its own (--models-from-store) lists the model as in the store and fetches it on first use."""
    digest = hashlib.sha256(origin.files["/tiny.gguf"]).hexdigest()
    models_port = cluster_node("models", "--pull-allowed-hosts=http://127.0.0.1", "--pull-to-store")
    text_port = cluster_node("text", "--models-from-store", "--context-length=2048")
    # A server's own port: no gateway, no key checked (the caller is the operator).
    with (
        GenmeshClient(f"127.0.0.1:{models_port}", "unused") as models,
        GenmeshClient(f"127.0.0.1:{text_port}", "unused") as text,
    ):
        models.models.pull(origin.url(f"/tiny.gguf#sha256={digest}"), name="tiny-cluster")
        assert object_keys(mesh, f"pulled/blobs/{digest}")
        listed = {model.name: model for model in text.text.list_models()}
        assert listed["tiny-cluster"].labels["location"] == "store"
        assert listed["tiny-cluster"].source == f"store:sha256:{digest}"
        assert text.text.generate("Hi", model="tiny-cluster", max_tokens=2).model == "tiny-cluster"
        listed = {model.name: model for model in text.text.list_models()}
        assert listed["tiny-cluster"].labels["location"] == "local"
        models.models.delete("tiny-cluster")  # from the store too
    assert not object_keys(mesh, "pulled/")


def object_keys(mesh: Mesh, prefix: str) -> list[str]:
    assert mesh.s3 is not None
    return [entry.key for entry in ObjectStore(mesh.s3.settings()).list("models", prefix)]


def test_only_admin_keys_may_pull_delete_or_prune(mesh, origin, user_key) -> None:
    with GenmeshClient(mesh.url, user_key) as user:
        with pytest.raises(errors.PermissionDenied, match="admin"):
            user.models.pull(origin.url("/tiny.gguf"), no_verify=True)
        with pytest.raises(errors.PermissionDenied):
            user.models.delete("anything")
        with pytest.raises(errors.PermissionDenied):
            user.models.prune()
    refused = httpx.post(
        f"http://{mesh.url}/v1/models:pull", json={"ref": origin.url("/tiny.gguf")}, headers={"x-api-key": user_key}
    )
    assert refused.status_code == 403 and "admin" in refused.json()["message"]
