"""Completion webhooks with real parts: a receiver on loopback gets one signed POST per finished job
through the gateway (verified with the README's recipe), a receiver that answers 500 twice gets the
third attempt, a server restarted between attempts still delivers (a real object store), the
issue's internal URLs are refused with 400 naming ``notify_url`` before anything is queued, and the
CLI's --notify-url reaches the receiver."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format

from genmesh.text.v1 import text_pb2
from servers.mesh.api_keys import KeySource
from servers.mesh.launcher import Mesh
from servers.mesh.processes import wait_until
from servers.mesh.s3 import S3Server
from servers.runtime.convert import job_status
from servers.runtime.queue import JobQueue
from servers.runtime.webhooks import gate
from servers.runtime.webhooks.allow import AllowList
from servers.runtime.webhooks.dispatcher import ARMED, DONE, PENDING, Delivery, Dispatcher
from servers.runtime.webhooks.gate import Notify, WebhookConfig
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore
from tests.integration.conftest import WEBHOOK_ALLOW
from tests.integration.helpers import add_keys, sse
from tests.unit.test_webhook_parts import readme_verify

pytestmark = pytest.mark.integration

OPERATOR_SECRET = "operator-secret-0123456789"


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def job(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on loopback: records every POST; answers the queued statuses, then 200."""

    server: http.server.ThreadingHTTPServer
    posts: queue.Queue[Post] = field(default_factory=queue.Queue)
    answers: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{path}"

    def next(self, timeout: float = 60) -> Post:
        return self.posts.get(timeout=timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = holder[0].answers.pop(0) if holder[0].answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            holder[0].posts.put(Post(self.path, dict(self.headers), body))

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


# -- through the gateway (the session mesh, allow-listed for loopback /hooks/) --------------------
@pytest.fixture(scope="module")
def hooks_key(mesh: Mesh) -> tuple[str, str]:
    """A key with its own webhook secret, added to the session mesh's keys file."""
    secret = "hooks-" + secrets.token_hex(12)
    return add_keys(mesh, {"hooks": f"secret={secret}"})["hooks"], secret


def get_job(mesh: Mesh, key: str, job_id: str) -> dict:
    response = httpx.get(f"http://{mesh.url}/v1/text/jobs/{job_id}", headers={"x-api-key": key}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def delivered(mesh: Mesh, key: str, job_id: str) -> dict:
    """The job once its one delivery is over (GetJob's ``deliveries``)."""
    found: list[dict] = []

    def over() -> bool:
        job = get_job(mesh, key, job_id)
        deliveries = job["status"]["deliveries"]
        found[:] = [job]
        return bool(deliveries) and deliveries[0]["state"] != "DELIVERY_STATE_PENDING"

    wait_until(over, timeout=60, what=f"the webhook of {job_id} to be delivered")
    return found[0]


def test_each_finished_job_gets_one_signed_post_of_its_get_job_json(mesh, hooks_key, receiver) -> None:
    key, secret = hooks_key
    verify = readme_verify()
    made = []
    for path, body in (
        ("/v1/text:generate", {"prompt": "Hi", "sampling": {"max_tokens": 2}, "notify_url": receiver.url("gen")}),
        ("/v1/text:embed", {"inputs": ["a", "b"], "notify_url": receiver.url("embed?run=1")}),
    ):
        status, events = sse(f"http://{mesh.url}", key, path, body)
        assert status == 200, events
        made.append((events[0]["job_id"], path))
    posts = {}
    for _ in made:
        post = receiver.next()
        assert verify(secret, post.headers["Genmesh-Signature"], post.body)
        assert not verify(secret + "x", post.headers["Genmesh-Signature"], post.body)
        posts[post.headers["Genmesh-Job-Id"]] = post
    for job_id, _ in made:
        job = delivered(mesh, key, job_id)
        post = posts[job_id]
        assert post.path == ("/hooks/gen" if job_id == made[0][0] else "/hooks/embed?run=1")
        assert post.job["status"]["job_id"] == job_id and post.job["status"]["state"] == "JOB_STATE_SUCCEEDED"
        assert post.job["status"]["client_id"] == "hooks"
        (delivery,) = job["status"]["deliveries"]
        job["status"]["deliveries"] = []  # the POST carries the job as it ended, before any delivery
        # The same Job GetJob answers (floats may be printed with other digits: compare the messages).
        assert json_format.ParseDict(post.job, text_pb2.Job()) == json_format.ParseDict(job, text_pb2.Job())
        assert post.job.keys() == job.keys() and post.job["status"].keys() == job["status"].keys()
        assert delivery["state"] == "DELIVERY_STATE_DELIVERED" and delivery["attempts"] == 1
        assert delivery["last_status_code"] == 200 and delivery["url"].startswith(receiver.url(""))
    assert receiver.posts.empty()  # one POST per job


def test_a_receiver_answering_500_twice_gets_the_third_attempt_through_the_gateway(mesh, hooks_key, receiver) -> None:
    key, secret = hooks_key
    receiver.answers = [500, 500]
    status, events = sse(
        f"http://{mesh.url}", key, "/v1/text:generate",
        {"prompt": "Hi", "sampling": {"max_tokens": 1}, "notify_url": receiver.url("retry")},
    )  # fmt: skip
    assert status == 200, events
    job_id = events[0]["job_id"]
    posts = [receiver.next() for _ in range(3)]
    assert len({post.body for post in posts}) == 1 and all(
        readme_verify()(secret, post.headers["Genmesh-Signature"], post.body) for post in posts
    )
    delivery = delivered(mesh, key, job_id)["status"]["deliveries"][0]
    assert (delivery["state"], delivery["attempts"], delivery["last_status_code"]) == (
        "DELIVERY_STATE_DELIVERED", 3, 200
    )  # fmt: skip


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://127.0.0.1:22/"])
def test_internal_urls_without_an_allowlist_entry_are_400_naming_notify_url(mesh, api_key, url) -> None:
    status, events = sse(
        f"http://{mesh.url}",
        api_key,
        "/v1/text:generate",
        {"prompt": "Hi", "sampling": {"max_tokens": 1}, "notify_url": url},
    )
    assert status == 400 and "notify_url" in events[0]["message"], events
    response = httpx.post(
        f"http://{mesh.url}/v1/training/jobs?notify_url={urllib.parse.quote(url, safe='')}",
        headers={"x-api-key": api_key},
        json={"layer": 2, "num_epochs": 1},
        timeout=30,
    )
    assert response.status_code == 400 and "notify_url" in response.json()["message"], response.text
    assert url not in WEBHOOK_ALLOW


def test_the_cli_notify_url_flag_gets_the_post_and_a_refused_url_names_the_flag(mesh, hooks_key, receiver) -> None:
    key, secret = hooks_key
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": key}
    cli = [str(Path(sys.executable).parent / "genmesh"), "text", "Hi", "--max-tokens", "1", "--json", "--notify-url"]
    done = subprocess.run([*cli, receiver.url("cli")], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout.splitlines()[0])["job_id"]
    post = receiver.next()
    assert post.path == "/hooks/cli" and post.headers["Genmesh-Job-Id"] == job_id
    assert readme_verify()(secret, post.headers["Genmesh-Signature"], post.body)
    refused = subprocess.run([*cli, "http://169.254.169.254/"], capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode != 0 and "INVALID_ARGUMENT" in refused.stderr and "--notify-url" in refused.stderr
    assert "Traceback" not in refused.stderr


# -- the dispatcher with a real object store (no mesh) --------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "data", "genmesh-hooks", "genmesh-hooks-secret-0123456789")
    server.start()
    try:
        store = ObjectStore(server.settings())
        store.ensure_buckets()
        yield store
    finally:
        server.stop()


def config(backoff: float) -> WebhookConfig:
    return WebhookConfig(AllowList.parse(WEBHOOK_ALLOW), backoff, 5.0, KeySource(None, None), OPERATOR_SECRET)


class Server:
    """The webhook half of one server process: a text queue and its dispatcher, started and closed."""

    def __init__(self, store: ObjectStore, backoff: float, *, resumes_jobs: bool = False) -> None:
        self.queue = JobQueue(name="text", id_prefix="txt", devices=["cpu"], max_queued=4,
                              service="genmesh.text.v1.TextService")  # fmt: skip
        self.queue.describe = lambda job: text_pb2.Job(status=job_status(job))
        self.queue.resumes_jobs = resumes_jobs
        self.dispatcher = Dispatcher(store, config(backoff))
        self.dispatcher.observe(self.queue)
        self.attempts: asyncio.Queue[Delivery] = asyncio.Queue()
        self.dispatcher.on_attempt.append(self.attempts.put_nowait)

    async def __aenter__(self) -> Server:
        self.queue.start()
        await self.dispatcher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispatcher.close()
        await self.queue.drain(5)

    def submit(self, url: str | None, *, job_id: str | None = None, work=lambda context: text_pb2.EmbedResponse()):
        gate.bind(Notify(url, "") if url else None)
        try:
            return self.queue.submit(work, method="Embed", job_id=job_id, force=job_id is not None)
        finally:
            gate.bind(None)

    async def attempt(self) -> Delivery:
        return await asyncio.wait_for(self.attempts.get(), 60)


async def test_500_twice_then_the_third_attempt_is_delivered_and_recorded(store, receiver) -> None:
    receiver.answers = [500, 500]
    async with Server(store, backoff=0.05) as server:
        job = server.submit(receiver.url("three"))
        outcomes = [await server.attempt() for _ in range(3)]
        assert [(d.attempts, d.last_status, d.state) for d in outcomes][-1] == (3, 200, "delivered")
        posts = [receiver.next(5) for _ in range(3)]
        assert all(readme_verify()(OPERATOR_SECRET, p.headers["Genmesh-Signature"], p.body) for p in posts)
        assert posts[0].job["status"]["job_id"] == job.id and posts[0].job["status"]["state"] == "JOB_STATE_SUCCEEDED"
        done = Delivery.from_bytes(store.get_bytes(OUTPUTS, f"{DONE}{job.id}.json"))
        assert (done.state, done.attempts, done.body) == ("delivered", 3, "")
        assert not store.exists(OUTPUTS, f"{PENDING}{job.id}.json")
    async with Server(store, backoff=0.05) as later:  # after a restart GetJob still finds it, in the store
        (found,) = await later.dispatcher.deliveries_of(job.id)
        assert (found.state, found.attempts, found.last_status) == ("delivered", 3, 200)


async def test_a_server_restarted_between_attempts_still_delivers(store, receiver) -> None:
    receiver.answers = [500]
    async with Server(store, backoff=2.0) as first:
        job = first.submit(receiver.url("restart"))
        failed = await first.attempt()
        assert (failed.attempts, failed.last_status, failed.state) == (1, 500, "pending")
        # The server stops before its retry is due: the delivery waits in the store.
    pending = Delivery.from_bytes(store.get_bytes(OUTPUTS, f"{PENDING}{job.id}.json"))
    assert (pending.attempts, pending.last_status) == (1, 500) and pending.next_attempt_at is not None
    first_post = receiver.next(5)
    async with Server(store, backoff=2.0) as second:
        assert job.id in second.dispatcher.deliveries  # taken up on start
        delivered = await second.attempt()
        assert (delivered.attempts, delivered.state) == (2, "delivered")
    second_post = receiver.next(5)
    assert second_post.body == first_post.body and second_post.headers["Genmesh-Job-Id"] == job.id
    assert readme_verify()(OPERATOR_SECRET, second_post.headers["Genmesh-Signature"], second_post.body)
    assert not store.exists(OUTPUTS, f"{PENDING}{job.id}.json")


async def test_a_resumed_job_keeps_its_webhook_and_a_drain_posts_nothing(store, receiver) -> None:
    """Training jobs resume after a restart: their webhook is armed when queued, a drain that stops
    them is not their end, and the resumed job (queued again without its request) posts once."""
    blocker = threading.Event()
    async with Server(store, backoff=0.05, resumes_jobs=True) as first:
        first.submit(None, work=lambda context: blocker.wait(30))  # keeps the worker busy
        job = first.submit(receiver.url("resumed"))
        armed = f"{ARMED}{job.id}.json"
        await asyncio.to_thread(wait_until, lambda: store.exists(OUTPUTS, armed), timeout=10, what="the armed record")
        drained = asyncio.ensure_future(first.queue.drain(0))
        async for _ in first.queue.events(job):  # the waiting job is cancelled by the drain
            pass
        blocker.set()
        await drained
        assert job.cancel_reason == "server shutting down"
    assert receiver.posts.empty()
    async with Server(store, backoff=0.05, resumes_jobs=True) as second:
        resumed = second.submit(None, job_id=job.id)  # as the training manager resumes it
        assert resumed.notify == Notify(receiver.url("resumed"), "")
        assert (await second.attempt()).state == "delivered"
    post = receiver.next(5)
    assert post.headers["Genmesh-Job-Id"] == job.id and post.job["status"]["state"] == "JOB_STATE_SUCCEEDED"
    assert not store.exists(OUTPUTS, f"{ARMED}{job.id}.json")
    assert receiver.posts.empty()
