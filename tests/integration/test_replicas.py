"""Two Text replicas behind the gateway (real S3 server, Envoy and server processes), as a user
runs them with ``genmesh up --replicas text=2``: work spreads over both, any replica answers for any
job, full queues are retried on the other replica, and a replica killed mid-job is survived. The same
mesh runs two Training replicas (``training=2``) for the one test of a training job's replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from genmesh import errors
from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2
from genmesh.text.v1 import text_pb2, text_pb2_grpc
from genmesh.training.v1 import training_pb2, training_pb2_grpc
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port, wait_until
from servers.runtime.forwarding import FORWARDED
from servers.runtime.job_ids import job_owner
from servers.runtime.job_records import record_key
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore

LONG = 1500  # tokens: a job that outlives the test step that needs it running (it is cancelled)


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Two Text replicas and two Training replicas behind one gateway: one start-up for the module."""
    options = LaunchOptions(
        port=free_port(),
        services=("text", "training"),
        data_dir=tmp_path_factory.mktemp("replicas"),
        replicas={"text": 2, "training": 2},
        # One job may wait per replica: two replicas hold four jobs (two running, two waiting).
        service_args={"text": ["--max-queued", "1", "--context-length", "2048"], "training": ["--threads", "1"]},
    )
    mesh = Mesh(options).start()
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture(scope="module")
def client(replicated: Mesh) -> Iterator[GenmeshClient]:
    with GenmeshClient(replicated.url, replicated.api_key) as client:
        yield client


def replica_of(job_id: str) -> int:
    owner = job_owner(job_id)
    assert owner is not None, job_id
    return owner.replica


def short_job(client: GenmeshClient) -> str:
    events = list(client.text.stream_generate("Hello", max_tokens=2))
    assert events[-1].WhichOneof("event") == "result"
    return events[0].job_id


def jobs_on_both(client: GenmeshClient) -> dict[int, str]:
    """A finished job of each replica (the gateway picks replicas; 40 tries all on one: ~1e-12)."""
    found: dict[int, str] = {}
    for _ in range(40):
        job_id = short_job(client)
        found.setdefault(replica_of(job_id), job_id)
        if len(found) == 2:
            return found
    pytest.fail(f"40 jobs all ran on replica {set(found)}")


def stub_for(mesh: Mesh, replica: int) -> tuple[grpc.Channel, text_pb2_grpc.TextServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{mesh.replica_ports['text'][replica]}")
    return channel, text_pb2_grpc.TextServiceStub(channel)


def started(stream: Iterator[text_pb2.GenerateResponse]) -> str:
    """Read a stream until its job runs; its id."""
    for event in stream:
        if event.WhichOneof("event") == "started":
            return event.job_id
    raise AssertionError("the stream ended before its job started")


def queued(stream: Iterator[text_pb2.GenerateResponse]) -> str:
    """The id of a stream's job, from its first event (the job may wait behind another one)."""
    for event in stream:
        return event.job_id
    raise AssertionError("the stream ended without an event")


def test_twenty_generations_spread_over_both_replicas_and_every_job_answers_from_either(
    replicated: Mesh, client: GenmeshClient
) -> None:
    job_ids = [short_job(client) for _ in range(20)]
    assert {replica_of(job_id) for job_id in job_ids} == {0, 1}  # all 20 on one: 2 in a million
    with httpx.Client(base_url=f"http://{replicated.url}", headers={"x-api-key": replicated.api_key}) as http:
        for job_id in job_ids:  # through the gateway, whichever replica it picks
            assert client.text.get_job(job_id).status.state == job_pb2.JOB_STATE_SUCCEEDED
            assert client.text.cancel_job(job_id).status.state == job_pb2.JOB_STATE_SUCCEEDED  # unchanged
            got = http.get(f"/v1/text/jobs/{job_id}")
            assert got.status_code == 200 and got.json()["status"]["state"] == "JOB_STATE_SUCCEEDED", got.text
            cancelled = http.post(f"/v1/text/jobs/{job_id}:cancel", json={})
            assert cancelled.status_code == 200 and cancelled.json()["status"]["job_id"] == job_id
    # Directly on each replica: half of these are forwarded to the other one.
    for replica in (0, 1):
        channel, stub = stub_for(replicated, replica)
        with channel:
            for job_id in job_ids:
                job = stub.GetJob(text_pb2.GetJobRequest(job_id=job_id), timeout=30)
                assert job.status.job_id == job_id and job.result.text


def test_cancel_through_the_gateway_reaches_the_owner_of_a_running_job(client: GenmeshClient) -> None:
    for _ in range(4):  # the gateway's pick is random: both replicas get some of these
        stream = client.text.stream_generate("Count:", max_tokens=LONG, detach=True)
        job_id = started(stream)
        stream.close()  # detached: the job keeps running without its client
        assert client.text.get_job(job_id).status.state == job_pb2.JOB_STATE_RUNNING
        cancelled = client.text.cancel_job(job_id)
        assert cancelled.status.state == job_pb2.JOB_STATE_CANCELLED, cancelled.status


def test_every_replica_lists_the_running_jobs_of_both(replicated: Mesh, client: GenmeshClient) -> None:
    running: dict[int, str] = {}
    try:
        for _ in range(40):  # the gateway picks the replica: until each runs one
            stream = client.text.stream_generate("Count:", max_tokens=LONG, detach=True)
            # Not `started`: a second job on a busy replica queues behind the first until that ends.
            job_id = queued(stream)
            stream.close()  # detached: it runs on
            if replica_of(job_id) in running:
                client.text.cancel_job(job_id)
                continue
            running[replica_of(job_id)] = job_id
            if len(running) == 2:
                break
        assert len(running) == 2, running
        wait_until(
            lambda: all(client.text.get_job(job_id).status.progress.step >= 1 for job_id in running.values()),
            timeout=60,
            what="both jobs to make tokens",
        )
        expected = sorted(running.values())

        def lists_both(replica: int) -> bool:
            channel, stub = stub_for(replicated, replica)
            request = text_pb2.ListJobsRequest(state=job_pb2.JOB_STATE_RUNNING, all_clients=True)
            with channel:
                listed = stub.ListJobs(request, timeout=30)
            assert all(job.status.progress.step >= 1 for job in listed.jobs)
            return sorted(job.status.job_id for job in listed.jobs) == expected

        # A peer that does not answer within its 5 s is left out of that page (both replicas keep the
        # two cores busy generating): wait for a page that has both, from each replica in turn.
        for replica in (0, 1):  # asked directly (the operator), each merges the other's live jobs with its own
            wait_until(lambda replica=replica: lists_both(replica), timeout=60, what=f"replica {replica}'s listing")
        wait_until(  # through the gateway
            lambda: (
                sorted(job.status.job_id for job in client.list_jobs(services=["text"], state="running").jobs)
                == expected
            ),
            timeout=60,
            what="the gateway's listing",
        )
    finally:
        for job_id in running.values():
            client.text.cancel_job(job_id)


def test_a_detached_job_is_watched_again_from_either_replica_over_grpc_rest_and_the_cli(
    replicated: Mesh, client: GenmeshClient
) -> None:
    stream = client.text.stream_generate("Once upon a time", max_tokens=24, detach=True)
    job_id = started(stream)
    stream.close()  # detached: it runs on without its client
    for replica in (0, 1):  # one of them forwards the watch to the owner
        channel, stub = stub_for(replicated, replica)
        with channel:
            events = list(stub.WatchJob(text_pb2.WatchJobRequest(job_id=job_id), timeout=120))
        kinds = [event.WhichOneof("event") for event in events]
        assert kinds[0] == "queued" and kinds[-1] == "result" and "started" in kinds, kinds
        streamed = "".join(event.delta.text for event in events if event.WhichOneof("event") == "delta")
        assert streamed == events[-1].result.text and all(event.job_id == job_id for event in events)
    watched = list(client.text.watch(job_id))  # through the gateway, after the end: the replay
    assert watched[-1].result.text == streamed
    with (
        httpx.Client(base_url=f"http://{replicated.url}", headers={"x-api-key": replicated.api_key}) as http,
        http.stream("GET", f"/v1/text/jobs/{job_id}:watch", timeout=120) as response,
    ):
        assert response.status_code == 200
        lines = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1]["state"] == "JOB_STATE_SUCCEEDED" and lines[-1]["result"]["text"] == streamed
    cli = Path(sys.executable).parent / "genmesh"
    env = {**os.environ, "GENMESH_URL": replicated.url, "GENMESH_API_KEY": replicated.api_key}
    shown = subprocess.run([str(cli), "job", "watch", job_id], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip() == streamed.strip(), shown.stderr


def test_a_forwarding_marker_from_outside_is_dropped_at_the_gateway(replicated: Mesh, client: GenmeshClient) -> None:
    stream = client.text.stream_generate("Count:", max_tokens=LONG, detach=True)
    job_id = started(stream)
    stream.close()
    try:
        # A client's marker would make the replica that is not the owner answer NOT_FOUND: the
        # gateway drops it, so all 20 calls reach the owner (with the marker kept: ~1 in a million).
        with grpc.insecure_channel(replicated.url) as channel:
            stub = text_pb2_grpc.TextServiceStub(channel)
            metadata = (("x-api-key", replicated.api_key), (FORWARDED, "someone"))
            for _ in range(20):
                job = stub.GetJob(text_pb2.GetJobRequest(job_id=job_id), metadata=metadata, timeout=30)
                assert job.status.state == job_pb2.JOB_STATE_RUNNING
        # A server answers a marked call itself: never forwarded again, so no loops.
        channel, other = stub_for(replicated, 1 - replica_of(job_id))
        with channel, pytest.raises(grpc.RpcError) as caught:
            other.GetJob(text_pb2.GetJobRequest(job_id=job_id), metadata=((FORWARDED, "text-9"),), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        client.text.cancel_job(job_id)


def test_full_replicas_are_retried_on_another_and_all_full_is_resource_exhausted(
    replicated: Mesh, client: GenmeshClient
) -> None:
    streams, running_on = [], set()
    try:
        for _ in range(4):  # each replica runs one and holds one waiting: four fit, none refused
            stream = client.text.stream_generate("Count:", max_tokens=LONG)
            first = next(stream)
            streams.append(stream)
            replica = replica_of(first.job_id)
            if replica not in running_on:  # the replica's first job: wait until it left the queue
                if first.WhichOneof("event") != "started":
                    assert started(stream) == first.job_id
                running_on.add(replica)
            else:
                assert first.WhichOneof("event") == "queued" and first.queued.queue_position == 0
        assert running_on == {0, 1}
        with pytest.raises(errors.ResourceExhausted, match="queue is full"):
            client.text.generate("hi", max_tokens=1)
        with httpx.Client(base_url=f"http://{replicated.url}", headers={"x-api-key": replicated.api_key}) as http:
            refused = http.post("/v1/text:generate", json={"prompt": "hi", "sampling": {"max_tokens": 1}})
        assert refused.status_code == 429 and "queue is full" in refused.text, refused.text
        admin = replicated.envoy.admin_url
        with urllib.request.urlopen(f"{admin}/stats?filter=^cluster.text.upstream_rq_retry$&format=json") as answer:
            stats = {item["name"]: item.get("value", 0) for item in json.load(answer)["stats"]}
        assert stats.get("cluster.text.upstream_rq_retry", 0) > 0  # refused by one replica, tried on the other
    finally:
        for stream in streams:
            stream.close()  # the client goes away: its jobs are cancelled


def test_a_killed_replica_fails_its_streams_and_its_finished_jobs_answer_from_the_store(
    replicated: Mesh, client: GenmeshClient
) -> None:
    assert replicated.s3 is not None
    store = ObjectStore(replicated.s3.settings())
    finished = jobs_on_both(client)
    for job_id in finished.values():  # records are written once a job ended, off the loop
        wait_until(lambda job_id=job_id: store.exists(OUTPUTS, record_key(job_id)), timeout=30, what="a job record")
    stream = client.text.stream_generate("Count:", max_tokens=LONG)
    running = started(stream)
    victim = replica_of(running)
    replicated.servers["text" if victim == 0 else "text-1"].kill()
    with pytest.raises(errors.Unavailable):
        for _ in stream:
            pass
    # The job that died with it: its replica is down (UNAVAILABLE naming it) or back with a new boot.
    with pytest.raises((errors.Unavailable, errors.NotFound)) as caught:
        client.text.get_job(running)
    expected = f"text replica {victim}" if isinstance(caught.value, errors.Unavailable) else "restarted"
    assert expected in str(caught.value), caught.value
    # Its finished job: answered from the store through the gateway, however often it is asked.
    for _ in range(6):
        job = client.text.get_job(finished[victim])
        assert job.status.state == job_pb2.JOB_STATE_SUCCEEDED and job.result.text
        watched = list(client.text.watch(finished[victim]))  # the one terminal event, from the record
        assert watched[-1].WhichOneof("event") == "result" and watched[-1].result.text == job.result.text
    # New work goes to the survivor (or to the victim once restarted): none of it fails.
    for _ in range(5):
        short_job(client)
    # Whole again before the next test: the supervisor restarted it and Envoy routes to it.
    wait_until(replicated._gateway_routes_all, timeout=120, what="the restarted replica")


def test_a_training_job_is_watched_and_read_through_the_replica_that_does_not_run_it(
    replicated: Mesh, client: GenmeshClient
) -> None:
    data = client.training.generate_synthetic_data(num_images=8, width=64, height=64, seed=5)
    job = client.training.create_job(
        layer=3, dataset_prefix=data.dataset_prefix, num_epochs=2, patch_size=32, architecture="tiny",
        batch_size=2, seed=1,
    )  # fmt: skip
    other = 1 - replica_of(job.job_id)
    with grpc.insecure_channel(f"127.0.0.1:{replicated.replica_ports['training'][other]}") as channel:
        stub = training_pb2_grpc.TrainingServiceStub(channel)
        watched = list(stub.WatchTrainingJob(training_pb2.WatchTrainingJobRequest(job_id=job.job_id), timeout=300))
        kinds = [event.WhichOneof("event") for event in watched]
        assert kinds.count("epoch_completed") == 2 and kinds[-1] == "result", kinds
        got = stub.GetTrainingJob(training_pb2.GetTrainingJobRequest(job_id=job.job_id), timeout=30)
        assert got.state == job_pb2.JOB_STATE_SUCCEEDED and got.model_id
