"""A crashed service is a normal event: `genmesh up`'s supervisor restarts it on the same port, the
gateway routes around it meanwhile, callers get UNAVAILABLE naming it, and the other services (a
training job included) never notice."""

from __future__ import annotations

import threading

import grpc
import httpx
import pytest

from genmesh import errors
from genmesh.common.v1 import job_pb2
from servers.mesh.processes import wait_until

pytestmark = pytest.mark.integration


def test_kill_9_of_a_server_under_load_is_survived(mesh, client) -> None:
    data = client.training.generate_synthetic_data(
        num_images=8, width=64, height=64, degradation_type="gaussian-noise", seed=21, dataset_name="resilience"
    )
    training = client.training.create_job(
        layer=42, dataset_prefix=data.dataset_prefix, num_epochs=3, patch_size=32, architecture="tiny", batch_size=2
    )
    image = mesh.servers["image"]
    restarts_before = mesh.supervisor.restarts("image")
    events: list = []
    failures: list[errors.GenmeshError] = []

    def generate() -> None:
        try:
            for event in client.images.stream_generate("a long one", width=256, height=256, steps=150, seed=1):
                events.append(event)
        except errors.GenmeshError as exc:
            failures.append(exc)

    caller = threading.Thread(target=generate)
    caller.start()
    wait_until(lambda: any(e.progress.step >= 1 for e in events), timeout=120, what="denoising to start")
    image.kill()  # SIGKILL mid-generation
    caller.join(60)
    assert not caller.is_alive()
    assert isinstance(failures[0], errors.Unavailable) and "image" in failures[0].message, failures
    # Until it is back, the gateway itself names it every way: REST (JSON, 503) and gRPC (grpcurl's view).
    down = "the image server is not available (down or restarting); retry shortly"
    with httpx.Client(base_url=f"http://{mesh.url}", headers={"x-api-key": mesh.api_key}, timeout=30) as http:
        reply = http.get("/v1/images/models")
    assert reply.status_code == 503 and reply.json()["message"] == down, reply.text
    assert reply.json()["code"] == 14 and reply.json()["details"][0]["metadata"] == {"service": "image"}
    with grpc.insecure_channel(mesh.url) as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/genmesh.image.v1.ImageService/ListModels")(
            b"", metadata=[("x-api-key", mesh.api_key)], timeout=30
        )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and raised.value.details() == down

    # The others never notice: a text generation works while Image is down or restarting.
    assert client.text.generate("Hello", max_tokens=2).usage.completion_tokens >= 1
    # Image comes back on its own, on the same port, and serves again through the gateway.
    wait_until(lambda: mesh.supervisor.restarts("image") == restarts_before + 1, timeout=30, what="a restart")
    wait_until(
        lambda: len(client.images.generate("back", width=64, height=64, steps=2).images) == 1,
        timeout=180,
        what="the image server to serve again",
    )
    assert image.alive() and mesh.supervisor.given_up() == []
    # The training job kept running through all of it.
    wait_until(
        lambda: client.training.get_job(training.job_id).state == job_pb2.JOB_STATE_SUCCEEDED,
        timeout=300,
        what="the training job to finish",
    )
