"""Jobs as a resource, through the real gateway: every key sees and lists its own jobs only, an admin
key (`client=key admin` in the keys file) sees every client's, nobody forges either header, a queued
job shows its place and can be cancelled from another connection, `genmesh job get tsk-...` works,
and finished jobs are still listed after their server restarts (from the index in the store)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from grpc_health.v1 import health_pb2

from genmesh import errors
from genmesh.client import AsyncGenmeshClient, GenmeshClient
from genmesh.common.v1 import job_pb2
from genmesh.library.v1 import library_pb2
from servers.mesh.launcher import LaunchOptions, Mesh, health_status
from servers.mesh.processes import free_port, wait_until
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore
from tests.integration.helpers import add_keys

pytestmark = pytest.mark.integration

SUCCEEDED, QUEUED, CANCELLED = job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_CANCELLED
SERVING_HEALTH = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def keys(mesh: Mesh) -> dict[str, str]:
    """Two ordinary keys (a, b) and an admin key, added to the session mesh's keys file; they work
    once the gateway applied them (within seconds, no restart)."""
    added = add_keys(mesh, {"jobs-a": "", "jobs-b": "", "jobs-ops": "admin"})
    return {name.removeprefix("jobs-"): key for name, key in added.items()}


@pytest.fixture(scope="module")
def clients(mesh: Mesh, keys: dict[str, str]) -> Iterator[dict[str, GenmeshClient]]:
    opened = {name: GenmeshClient(mesh.url, key) for name, key in keys.items()}
    yield opened
    for client in opened.values():
        client.close()


def first_event(events: Iterator) -> object:
    for event in events:
        return event
    raise AssertionError("the stream sent nothing")


def rest(mesh: Mesh, key: str, path: str, **params: object) -> httpx.Response:
    return httpx.get(f"http://{mesh.url}{path}", headers={"x-api-key": key}, params=params, timeout=30)


@pytest.fixture(scope="module")
def made(clients: dict[str, GenmeshClient]) -> dict[str, str]:
    """Key a's text, image and training-task jobs and key b's text job, all finished."""
    a, b = clients["a"], clients["b"]
    text = first_event(a.text.stream_generate("Once", max_tokens=2, detach=True)).job_id
    image = first_event(a.images.stream_generate("a dot", width=64, height=64, steps=2, seed=1, detach=True)).job_id
    events = list(a.training.stream_synthetic_data(num_images=2, width=64, height=64, seed=3, dataset_name="jobs-a"))
    task, prefix = events[-1].job_id, events[-1].result.dataset_prefix
    training = a.training.create_job(layer=61, dataset_prefix=prefix, num_epochs=50, architecture="tiny", patch_size=32)
    a.training.cancel_job(training.job_id)
    other = first_event(b.text.stream_generate("Twice", max_tokens=2, detach=True)).job_id
    wait_until(
        lambda: a.training.get_job(training.job_id).state == CANCELLED, timeout=120, what="the training job to stop"
    )
    for job_id, get_job in ((text, a.text.get_job), (image, a.images.get_job), (other, b.text.get_job)):
        wait_until(
            lambda job_id=job_id, get_job=get_job: get_job(job_id).status.state == SUCCEEDED,
            timeout=120,
            what=f"job {job_id} to succeed",
        )
    return {"text": text, "image": image, "task": task, "training": training.job_id, "other": other}


def listed_ids(client: GenmeshClient, **filters: object) -> dict[str, int]:
    """Every job the client lists, paging to the end: id -> state."""
    found: dict[str, int] = {}
    token = ""
    while True:
        page = client.list_jobs(page_size=2, page_token=token, **filters)
        found.update({listed.status.job_id: listed.status.state for listed in page.jobs})
        token = page.next_page_token
        if not token:
            return found


def test_each_key_lists_its_own_jobs_and_an_admin_lists_all(mesh, clients, keys, made) -> None:
    # Key a: its jobs across services, in their states; paging by two still gives each once.
    mine = {made["text"]: SUCCEEDED, made["image"]: SUCCEEDED, made["task"]: SUCCEEDED, made["training"]: CANCELLED}
    assert listed_ids(clients["a"]) == mine
    assert listed_ids(clients["b"]) == {made["other"]: SUCCEEDED}
    everyone = listed_ids(clients["ops"], all_clients=True)
    assert {*mine, made["other"]} <= set(everyone)
    # A training job is listed with the whole resource.
    (trained,) = clients["a"].list_jobs(services=["training"], state="cancelled").jobs
    assert trained.job.training_job.spec.layer == 61 and trained.status.method.endswith("/CreateTrainingJob")
    # Newest first, and each item is the Job GetJob answers, with its owner.
    page = clients["ops"].list_jobs(services=["text"], all_clients=True, page_size=200)
    times = [listed.status.create_time.ToMilliseconds() for listed in page.jobs]
    assert times == sorted(times, reverse=True)
    by_id = {listed.status.job_id: listed.job for listed in page.jobs}
    assert by_id[made["text"]] == clients["ops"].text.get_job(made["text"])
    assert by_id[made["text"]].status.client_id == "jobs-a" and by_id[made["other"]].status.client_id == "jobs-b"
    # The same over REST, per service; filters by state and method.
    body = rest(mesh, keys["a"], "/v1/text/jobs").json()
    assert [job["status"]["job_id"] for job in body["jobs"]] == [made["text"]]
    assert rest(mesh, keys["a"], "/v1/images/jobs", state="JOB_STATE_FAILED").json()["jobs"] == []
    body = rest(mesh, keys["a"], "/v1/training/all-jobs", method="GenerateSyntheticData").json()
    assert [job["status"]["job_id"] for job in body["jobs"]] == [made["task"]]
    assert body["jobs"][0]["result"]["synthetic_data"]["pair_count"] == 2


def rest_listed(mesh: Mesh, key: str, **params: object) -> dict[str, tuple[str, str]]:
    """Every job ``GET /v1/jobs`` lists for ``key``, paging by two: id -> (service, state)."""
    found: dict[str, tuple[str, str]] = {}
    token = ""
    while True:
        response = rest(mesh, key, "/v1/jobs", page_size=2, page_token=token, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        found.update({job["status"]["job_id"]: (job["service"], job["status"]["state"]) for job in body["jobs"]})
        token = body["next_page_token"]
        if not token:
            return found


def test_one_rest_call_lists_a_keys_jobs_across_services(mesh, keys, made) -> None:
    ok, cancelled = "JOB_STATE_SUCCEEDED", "JOB_STATE_CANCELLED"
    mine = {made["text"]: ("text", ok), made["image"]: ("image", ok), made["task"]: ("training", ok),
            made["training"]: ("training", cancelled)}  # fmt: skip
    assert rest_listed(mesh, keys["a"]) == mine
    assert rest_listed(mesh, keys["b"]) == {made["other"]: ("text", ok)}
    everyone = rest_listed(mesh, keys["ops"], all_clients="true")
    assert {**mine, made["other"]: ("text", ok)}.items() <= everyone.items()
    refused = rest(mesh, keys["b"], "/v1/jobs", all_clients="true")  # not an admin key
    assert refused.status_code == 403 and refused.json()["code"] == 7, refused.text
    # Filters: services by name, a state; each item is the Job GetJob answers, with its service.
    assert rest_listed(mesh, keys["a"], service="text,image") == {made["text"]: mine[made["text"]],
                                                                  made["image"]: mine[made["image"]]}  # fmt: skip
    body = rest(mesh, keys["a"], "/v1/jobs", state="cancelled").json()
    assert [job["status"]["job_id"] for job in body["jobs"]] == [made["training"]]
    assert body["jobs"][0]["training_job"]["spec"]["layer"] == 61
    # Bad input: 400 naming the parameter, in genmesh's error shape.
    for params, name in (({"page_size": 0}, "page_size"), ({"state": "done"}, "state"),
                         ({"service": "sound"}, "service"), ({"created_after": "yesterday"}, "created_after"),
                         ({"colour": "red"}, "colour"), ({"method": "Generate"}, "method")):  # fmt: skip
        response = rest(mesh, keys["a"], "/v1/jobs", **params)
        assert response.status_code == 400, (params, response.text)
        error = response.json()
        assert error["code"] == 3 and name in error["message"], error
        assert error["details"][0]["fieldViolations"][0]["field"] == name
    assert rest(mesh, "gm_wrong", "/v1/jobs").status_code == 401


def test_the_async_client_lists_the_same(mesh, keys, made) -> None:
    async def listed() -> tuple[set[str], list[str]]:
        async with AsyncGenmeshClient(mesh.url, keys["a"]) as client:
            page = await client.list_jobs(page_size=3)
            ids = {listed.status.job_id for listed in page.jobs}
            while page.next_page_token:
                page = await client.list_jobs(page_size=3, page_token=page.next_page_token)
                ids |= {listed.status.job_id for listed in page.jobs}
            outputs = await client.outputs.list(kind="image")
        return ids, [output.job_id for output in outputs.outputs]

    ids, images = asyncio.run(listed())
    assert ids == {made["text"], made["image"], made["task"], made["training"]} and images == [made["image"]]


def test_another_clients_job_is_not_found_and_headers_cannot_be_forged(mesh, clients, keys, made) -> None:
    b = clients["b"]
    for call in (b.text.get_job, b.text.cancel_job, lambda job_id: list(b.text.watch(job_id))):
        with pytest.raises(errors.NotFound):
            call(made["text"])
    for job_id in (made["task"], made["training"]):
        with pytest.raises(errors.NotFound):
            b.training.get_job(job_id)
        with pytest.raises(errors.NotFound):
            b.training.cancel_job(job_id)
    assert rest(mesh, keys["b"], f"/v1/text/jobs/{made['text']}").status_code == 404
    # A caller's own x-client-id / x-genmesh-admin are dropped by the gateway.
    forged = {"x-api-key": keys["b"], "x-client-id": "jobs-a", "x-genmesh-admin": "true"}
    response = httpx.get(f"http://{mesh.url}/v1/text/jobs/{made['text']}", headers=forged, timeout=30)
    assert response.status_code == 404
    response = httpx.get(f"http://{mesh.url}/v1/text/jobs", headers=forged, params={"all_clients": True}, timeout=30)
    assert response.status_code == 403 and "all_clients" in response.json()["message"]
    with pytest.raises(errors.PermissionDenied):
        b.list_jobs(all_clients=True)
    # The owner and the admin see it; the admin can cancel it (finished: unchanged).
    assert clients["a"].text.get_job(made["text"]).status.client_id == "jobs-a"
    assert clients["ops"].text.cancel_job(made["text"]).status.state == SUCCEEDED
    # Bad paging is INVALID_ARGUMENT naming the field.
    for params, field in (({"page_size": 201}, "page_size"), ({"page_token": "nope"}, "page_token")):
        response = rest(mesh, keys["a"], "/v1/images/jobs", **params)
        assert response.status_code == 400 and field in response.json()["message"], response.text


CLI = str(Path(sys.executable).parent / "genmesh")


def test_genmesh_job_get_and_jobs_show_a_training_task(mesh, keys, made) -> None:
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": keys["a"]}
    shown = subprocess.run([CLI, "job", "get", made["task"]], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["status"]["job_id"] == made["task"] and job["status"]["state"] == "JOB_STATE_SUCCEEDED"
    assert job["status"]["method"].endswith("/GenerateSyntheticData") and job["status"]["client_id"] == "jobs-a"
    table = subprocess.run([CLI, "jobs"], env=env, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "SERVICE", "METHOD", "STATE", "PROGRESS", "AGE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {made["text"], made["image"], made["task"], made["training"]}
    assert rows[made["task"]][1:4] == ["training", "GenerateSyntheticData", "succeeded"]
    only = subprocess.run([CLI, "jobs", "--service", "image"], env=env, capture_output=True, text=True)
    assert [line.split()[0] for line in only.stdout.splitlines()[1:]] == [made["image"]]


def test_a_queued_job_shows_its_place_and_another_connection_cancels_it(mesh, clients, keys) -> None:
    a = clients["a"]
    long = "1, 2, 3, 4, 5, 6, 7,"
    running = first_event(a.text.stream_generate(long, max_tokens=2000, temperature=0, detach=True)).job_id
    waiting = first_event(a.text.stream_generate(long, max_tokens=2000, temperature=0, detach=True)).job_id
    try:
        queued = a.list_jobs(services=["text"], state="queued").jobs
        assert [listed.status.job_id for listed in queued] == [waiting]
        assert queued[0].status.queue_position == 0  # next after the running one
        with GenmeshClient(mesh.url, keys["a"]) as second:
            assert second.text.cancel_job(waiting).status.state == CANCELLED
        assert a.list_jobs(services=["text"], state="queued").jobs == []
        cancelled = a.list_jobs(services=["text"], state="cancelled").jobs
        assert waiting in [listed.status.job_id for listed in cancelled]
    finally:
        clients["a"].text.cancel_job(running)
        clients["a"].text.cancel_job(waiting)


def test_finished_jobs_are_still_listed_after_their_server_restarts(mesh, clients, object_store, made) -> None:
    a = clients["a"]
    for job_id in (made["text"], made["other"]):  # written before their end was sent
        assert object_store.exists(OUTPUTS, f"jobs/{job_id}.json")
    restarts = mesh.supervisor.restarts("text")
    mesh.servers["text"].kill()
    wait_until(lambda: mesh.supervisor.restarts("text") == restarts + 1, timeout=30, what="the text server's restart")
    # The new process serving and the gateway routing to it before the calls below: in one loaded full
    # run a GetJob right after a successful list got UNAVAILABLE (the gateway's health checks catching up).
    port = mesh.server_ports["text"]
    wait_until(lambda: health_status(port) == SERVING_HEALTH, timeout=120, what="the restarted text server")
    wait_until(mesh._gateway_routes_all, timeout=60, what="the gateway to route to it again")

    def listed() -> list[str]:
        try:
            return [listed.status.job_id for listed in a.list_jobs(services=["text"]).jobs]
        except errors.Unavailable:
            return []

    wait_until(lambda: made["text"] in listed(), timeout=120, what="the text server to list again")
    assert made["other"] not in listed()  # still only key a's
    assert a.text.get_job(made["text"]).status.state == SUCCEEDED  # from its record
    with pytest.raises(errors.NotFound):
        clients["b"].text.get_job(made["text"])


def test_listing_pages_through_the_index_without_reading_it_all(mesh, clients, object_store) -> None:
    """Many finished jobs of one client: every page is newest first, none repeats, and the index
    names are all a page reads besides the records it returns."""
    from servers.runtime.job_listing import JobIndex

    index = JobIndex(object_store, "video")
    base = 1_700_000_000.0
    ids = [f"vid-9-{secrets.token_hex(12)}" for _ in range(7)]
    for number, job_id in enumerate(ids):
        created = datetime.fromtimestamp(base + number, UTC).isoformat().replace("+00:00", "Z")
        status = {"job_id": job_id, "state": "JOB_STATE_SUCCEEDED", "client_id": "jobs-a", "create_time": created}
        record = {"status": status}
        object_store.put_bytes(OUTPUTS, f"jobs/{job_id}.json", json.dumps(record).encode(), "application/json")
        index.add(job_id, base + number, "succeeded", "genmesh.video.v1.VideoService/GenerateVideo", "jobs-a")
    pages, token = [], ""
    while True:
        page = clients["a"].list_jobs(services=["video"], page_size=3, page_token=token, created_before=base + 100)
        pages.append([listed.status.job_id for listed in page.jobs])
        token = page.next_page_token
        if not token:
            break
    assert [job_id for page in pages for job_id in page] == list(reversed(ids))
    assert all(len(page) <= 3 for page in pages)
    after = clients["a"].list_jobs(services=["video"], created_after=base + 3.5, created_before=base + 100).jobs
    assert [listed.status.job_id for listed in after] == list(reversed(ids[4:]))


def test_an_agent_jobs_sub_jobs_belong_to_its_caller(mesh, clients, keys) -> None:
    a = clients["a"]
    made: list = []

    def character() -> bool:
        # A test before this one restarts the text server: wait until the agent reaches it again
        # (its channel reconnects within seconds; a call before that is refused as UNAVAILABLE).
        made[:] = list(a.agent.stream_create_character("a lighthouse keeper", stages=["text"], seed=2))
        return True

    wait_until(character, timeout=60, what="the agent to reach the restarted text server")
    events = made
    sub_job = next(event.stage_started.sub_job_id for event in events if event.WhichOneof("event") == "stage_started")
    assert a.agent.get_job(events[0].job_id).status.client_id == "jobs-a"
    assert a.text.get_job(sub_job).status.client_id == "jobs-a"
    assert sub_job in [listed.status.job_id for listed in a.list_jobs(services=["text"]).jobs]
    with pytest.raises(errors.NotFound):
        clients["b"].text.get_job(sub_job)
    # The library lists the character as one output; its stage's job (a text output of its own) only
    # when asked, naming the character; by id it is there as any job.
    character = events[0].job_id
    assert a.text.get_job(sub_job).status.parent_job_id == character
    assert a.agent.get_job(character).status.parent_job_id == ""
    shown = {output.job_id: output for output in a.outputs.list(page_size=200).outputs}
    assert shown[character].kind == library_pb2.OUTPUT_KIND_CHARACTER and sub_job not in shown
    assert sub_job not in [output.job_id for output in a.outputs.list(kind="text").outputs]
    with_sub_jobs = {output.job_id: output for output in a.outputs.list(page_size=200, include_sub_jobs=True).outputs}
    assert with_sub_jobs[sub_job].parent_job_id == character and with_sub_jobs[character].parent_job_id == ""
    assert with_sub_jobs[sub_job].kind == library_pb2.OUTPUT_KIND_TEXT
    assert set(shown) < set(with_sub_jobs)
    texts = a.outputs.list(kind="text", include_sub_jobs=True).outputs
    assert sub_job in [output.job_id for output in texts] and character not in [output.job_id for output in texts]
    body = rest(mesh, keys["a"], "/v1/outputs", include_sub_jobs="true", kind="OUTPUT_KIND_TEXT").json()
    assert {"job_id": sub_job, "parent_job_id": character}.items() <= next(
        output for output in body["outputs"] if output["job_id"] == sub_job
    ).items()
    b_sees = clients["b"].outputs.list(page_size=200, include_sub_jobs=True).outputs
    assert not {character, sub_job} & {output.job_id for output in b_sees}  # still only one's own
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": keys["a"]}
    listed = subprocess.run([CLI, "outputs", "--limit", "200"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and character in listed.stdout and sub_job not in listed.stdout, listed.stderr
    listed = subprocess.run([CLI, "outputs", "--kind", "text", "--sub-jobs"], env=env, capture_output=True, text=True)
    line = next(line for line in listed.stdout.splitlines() if line.startswith(sub_job))
    assert f"(sub-job of {character})" in line, listed.stdout
    # A caller cannot make its own job pass for a sub-job: the gateway drops the header.
    forged = {"x-api-key": keys["a"], "x-genmesh-parent-job": character}
    with httpx.stream("POST", f"http://{mesh.url}/v1/text:generate", headers=forged, timeout=120,
                      json={"prompt": "Once", "sampling": {"max_tokens": 1}, "detach": True}) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        first = json.loads(next(line for line in response.iter_lines() if line.startswith("data: "))[6:])
    wait_until(lambda: a.text.get_job(first["job_id"]).status.state == SUCCEEDED, timeout=120, what="it")
    assert a.text.get_job(first["job_id"]).status.parent_job_id == ""
    # Deleting the character deletes its stages' outputs with it: neither is listed any more, even
    # with sub-jobs, and another key cannot delete them.
    with pytest.raises(errors.NotFound):
        clients["b"].outputs.delete(character)
    a.outputs.delete(character)
    left = {output.job_id for output in a.outputs.list(page_size=200, include_sub_jobs=True).outputs}
    assert not {character, sub_job} & left
    with pytest.raises(errors.NotFound):
        a.outputs.delete(sub_job)  # gone with its character


# -- the library of outputs ---------------------------------------------------------------------


def test_the_library_lists_a_clients_outputs_with_their_parameters(mesh, clients, keys, made) -> None:
    outputs = clients["a"].outputs.list(page_size=200).outputs
    by_id = {output.job_id: output for output in outputs}
    assert made["image"] in by_id and made["text"] in by_id and made["other"] not in by_id
    assert made["task"] not in by_id and made["training"] not in by_id  # synthetic data and training: no outputs
    image = by_id[made["image"]]
    assert image.kind == library_pb2.OUTPUT_KIND_IMAGE and image.service == "image" and image.client_id == "jobs-a"
    assert image.thumbnail.key.startswith(image.folder) and image.folder.endswith(f"/{made['image']}/")
    # As the REST API writes them (an int64 seed is a JSON string), to send back as they are.
    assert image.parameters["steps"] == 2 and image.parameters["width"] == 64 and image.parameters["seed"] == "1"
    assert httpx.get(image.thumbnail.url, timeout=30).content[:4] == b"\x89PNG"  # a fresh presigned URL
    assert by_id[made["text"]].kind == library_pb2.OUTPUT_KIND_TEXT and by_id[made["text"]].parameters["model"]
    # Newest first; by kind; over REST.
    times = [output.create_time.ToMilliseconds() for output in outputs]
    assert times == sorted(times, reverse=True)
    assert [o.job_id for o in clients["a"].outputs.list(kind="image").outputs] == [made["image"]]
    body = rest(mesh, keys["a"], "/v1/outputs", kind="OUTPUT_KIND_IMAGE").json()
    assert [output["job_id"] for output in body["outputs"]] == [made["image"]]
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": keys["a"]}
    shown = subprocess.run([CLI, "outputs", "--kind", "image"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    header, first = shown.stdout.splitlines()[:2]
    assert header.split()[:3] == ["ID", "KIND", "AGE"] and first.split()[:2] == [made["image"], "image"]
    # For people: numbers as numbers (the int64 seed, the steps the Struct holds as 2.0).
    assert {"seed=1", "steps=2", "width=64"} <= set(first.split()) and 'prompt="a dot"' in first, first


def test_deleting_an_output_is_for_its_owner_and_the_record_says_so(mesh, clients, keys, object_store) -> None:
    a = clients["a"]
    job_id = first_event(a.images.stream_generate("to delete", width=64, height=64, steps=2, detach=True)).job_id
    wait_until(lambda: job_id in [o.job_id for o in a.outputs.list(kind="image").outputs], timeout=120, what="it")
    folder = next(o.folder for o in a.outputs.list(kind="image").outputs if o.job_id == job_id)
    assert list(object_store.list(OUTPUTS, folder))
    with pytest.raises(errors.NotFound):
        clients["b"].outputs.delete(job_id)
    response = httpx.delete(f"http://{mesh.url}/v1/outputs/{job_id}", headers={"x-api-key": keys["a"]}, timeout=30)
    # The one image; the record is not in the folder (jobs/<job_id>.json) and stays, marked.
    assert response.status_code == 200 and int(response.json()["deleted_objects"]) == 1, response.text
    assert list(object_store.list(OUTPUTS, folder)) == []
    assert job_id not in [output.job_id for output in a.outputs.list(page_size=200).outputs]
    recorded = json.loads(object_store.get_bytes(OUTPUTS, f"jobs/{job_id}.json"))
    assert recorded["status"]["outputs_deleted_time"]
    with pytest.raises(errors.NotFound):
        a.outputs.delete(job_id)  # nothing left


def test_text_outputs_and_those_of_older_versions_list_and_delete(mesh, clients, object_store, made) -> None:
    """A text output has no folder (its text is in the job's record); an image output stored by an
    older version, with a result.json beside its images that its record's `record` names, lists and
    deletes as it always did."""
    from servers.runtime.library import Library

    b = clients["b"]
    # An older version's output: a copy of a real image job's record and files, plus its result.json.
    old_id = f"img-7-{secrets.token_hex(12)}"
    record = json.loads(object_store.get_bytes(OUTPUTS, f"jobs/{made['image']}.json").replace(
        made["image"].encode(), old_id.encode()))  # fmt: skip
    record["status"]["client_id"] = "jobs-b"
    image_key = record["result"]["images"][0]["artifact"]["key"]
    folder = image_key.rsplit("/", 1)[0] + "/"
    record["result"]["record"] = {"bucket": OUTPUTS, "key": f"{folder}result.json", "content_type": "application/json"}
    image = object_store.get_bytes(OUTPUTS, image_key.replace(old_id, made["image"]))
    object_store.put_bytes(OUTPUTS, image_key, image, "image/png")
    object_store.put_bytes(OUTPUTS, f"{folder}result.json", b'{"job_id": "%s"}' % old_id.encode(), "application/json")
    object_store.put_bytes(OUTPUTS, f"jobs/{old_id}.json", json.dumps(record).encode(), "application/json")
    Library(object_store).add(old_id, time.time() - 60, "image", "image", "jobs-b")

    by_id = {output.job_id: output for output in b.outputs.list(page_size=200).outputs}
    old, text = by_id[old_id], by_id[made["other"]]
    assert old.folder == folder and old.thumbnail.key == image_key and old.parameters["steps"] == 2
    assert f"{folder}result.json" in [artifact.key for artifact in old.artifacts]
    assert text.kind == library_pb2.OUTPUT_KIND_TEXT and text.folder == "" and not text.HasField("thumbnail")
    assert [artifact.key for artifact in text.artifacts] == [f"jobs/{made['other']}.json"]  # the record itself
    assert text.parameters["prompt"] == "Twice" and text.parameters["model"] and "seed" in text.parameters
    assert httpx.get(text.artifacts[0].url, timeout=30).json()["result"]["text"]  # its text, presigned

    assert b.outputs.delete(old_id).deleted_objects == 2 and not list(object_store.list(OUTPUTS, folder))
    assert b.outputs.delete(made["other"]).deleted_objects == 0  # nothing but the record, which stays
    for job_id in (old_id, made["other"]):
        assert json.loads(object_store.get_bytes(OUTPUTS, f"jobs/{job_id}.json"))["status"]["outputs_deleted_time"]
    assert not {old_id, made["other"]} & {output.job_id for output in b.outputs.list(page_size=200).outputs}


def test_the_library_pages_through_many_stored_results(mesh, clients, object_store, made) -> None:
    """1,200 outputs of one client (more than one S3 listing page of index names), written as real
    jobs leave them (a copy of a real image job's record each, and its index names): the pages give
    each once, newest first, with its parameters, and a page costs about the same whatever the
    store holds (bench/library.py measures 5,000)."""
    from concurrent.futures import ThreadPoolExecutor

    from servers.runtime.library import Library

    template = json.loads(object_store.get_bytes(OUTPUTS, f"jobs/{made['image']}.json"))
    library = Library(object_store)
    base = 1_600_000_000.0

    def write(number: int) -> str:
        job_id = f"img-7-{number:024x}"
        record = json.loads(json.dumps(template).replace(made["image"], job_id))
        record["status"]["client_id"] = "jobs-ops"
        record["status"]["create_time"] = datetime.fromtimestamp(base + number, UTC).isoformat().replace("+00:00", "Z")
        object_store.put_bytes(OUTPUTS, f"jobs/{job_id}.json", json.dumps(record).encode(), "application/json")
        library.add(job_id, base + number, "image", "image", "jobs-ops")
        return job_id

    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(write, range(1200)))
    seconds, seen, token = [], [], ""
    while True:
        started = time.monotonic()
        page = clients["ops"].outputs.list(page_size=100, page_token=token, created_before=base + 10_000)
        seconds.append(time.monotonic() - started)
        seen.extend(output.job_id for output in page.outputs)
        assert all(output.parameters["steps"] == 2 for output in page.outputs)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(written)) and len(seconds) == 12
    # Reading the whole index (2,400 names and more) would take seconds per page here.
    assert sorted(seconds)[len(seconds) // 2] < 1.0, seconds


def test_finished_jobs_are_still_listed_after_genmesh_up_stops_and_starts(tmp_path: Path, monkeypatch) -> None:
    """A small mesh of its own (S3, Text, Envoy), stopped and started again on the same data folder."""
    for name in ("GENMESH_API_KEYS", "GENMESH_API_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)

    def up() -> Mesh:
        options = LaunchOptions(
            port=free_port(), services=("text",), data_dir=tmp_path, service_args={"text": ["--context-length", "512"]}
        )
        return Mesh(options).start()

    mesh = up()
    try:
        with GenmeshClient(mesh.url, mesh.api_key) as client:
            events = list(client.text.stream_generate("Once", max_tokens=2))
            job_id = events[-1].job_id
        assert mesh.s3 is not None
        store = ObjectStore(mesh.s3.settings())
        wait_until(lambda: store.exists(OUTPUTS, f"jobs/{job_id}.json"), timeout=30, what="its record")
    finally:
        mesh.stop()
    mesh = up()
    try:
        with GenmeshClient(mesh.url, mesh.api_key) as client:
            (listed,) = client.list_jobs().jobs
            assert listed.status.job_id == job_id and listed.status.state == SUCCEEDED
            assert listed.status.client_id == "local"  # the key genmesh up generated, an admin one
    finally:
        mesh.stop()


def test_a_job_id_of_another_service_is_not_found_there_even_with_its_record(
    gateway_url: str, api_key: str, object_store: ObjectStore
) -> None:
    """Found by the REST fuzz run: records share one bucket, so the Agent answered a text job's id from
    the text job's record (GetJob as if it were a character; WatchJob failed with INTERNAL)."""
    headers = {"x-api-key": api_key}
    with httpx.stream("POST", f"{gateway_url}/v1/text:generate", headers=headers, timeout=60,
                      json={"prompt": "Hi", "sampling": {"max_tokens": 1}}) as stream:  # fmt: skip
        first = next(line for line in stream.iter_lines() if line.startswith("data:"))
    job_id = json.loads(first[5:])["job_id"]
    wait_until(lambda: object_store.exists(OUTPUTS, f"jobs/{job_id}.json"), timeout=30, what="the job's record")
    for path in (f"/v1/agent/jobs/{job_id}", f"/v1/agent/jobs/{job_id}:watch", f"/v1/images/jobs/{job_id}"):
        answer = httpx.get(f"{gateway_url}{path}", headers=headers, timeout=30)
        assert answer.status_code == 404, (path, answer.text)
    assert httpx.get(f"{gateway_url}/v1/text/jobs/{job_id}", headers=headers, timeout=30).status_code == 200
