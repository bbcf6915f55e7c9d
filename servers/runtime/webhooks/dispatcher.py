"""Completion webhooks of one server: persisted, attempted, retried, reported.

When a job with a webhook ends, its terminal ``Job`` (the service's own message, as JSON the way
GetJob answers over REST) is written with the delivery's state to ``webhooks/pending/<job_id>.json``
in the ``outputs`` bucket, then posted. Each attempt is logged (``webhook_attempt``) and its outcome
saved; a failure is retried with exponential backoff (``deliver.Backoff``) for up to 24 hours after
the job ended. A delivery that is over (delivered, or given up) moves to ``webhooks/done/`` without its
body, where GetJob still finds it after a restart. On start a server takes up the pending deliveries
of its own jobs (their ids name the service's queues and the replica), so a restart between attempts
loses nothing.

Jobs that outlive a restart (training jobs resume from their checkpoints) are "armed" when queued
(``webhooks/armed/<job_id>.json``): the resumed job, queued again without its original request, gets
its webhook back, and a drain that stops it to resume later posts nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from google.protobuf import json_format

from genmesh.errors import GenmeshError, InvalidArgument, NotFound
from servers.runtime.events import SHUTTING_DOWN
from servers.runtime.job_ids import job_owner
from servers.runtime.webhooks import allow, deliver
from servers.runtime.webhooks.gate import KeyWebhooks, Notify, WebhookConfig
from storage.buckets import OUTPUTS
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

PENDING = "webhooks/pending/"
DONE = "webhooks/done/"
ARMED = "webhooks/armed/"
KEEP_FINISHED = 1000  # finished deliveries answered from memory (older ones from the store)


def job_json(message: Any) -> str:
    """A ``Job`` message as the gateway's REST answer writes it (proto field names, defaults shown)."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(data, separators=(",", ":"))


@dataclass
class Delivery:
    job_id: str
    url: str
    client_id: str
    ended_at: float
    body: str = ""  # the terminal Job as JSON; dropped once the delivery is over
    state: str = "pending"  # pending | delivered | gave_up
    attempts: int = 0
    last_status: int = 0
    last_error: str = ""
    last_attempt_at: float | None = None
    next_attempt_at: float | None = None

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Delivery:
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in json.loads(data).items() if key in fields})


class _QueueHook:
    """A queue observer: arms webhooks of jobs that resume after a restart, and sends on the end."""

    def __init__(self, dispatcher: Dispatcher, queue: Any) -> None:
        self.dispatcher, self.queue = dispatcher, queue

    def queued(self, job: Any) -> None:
        self.dispatcher.queued(self.queue, job)

    def started(self, job: Any, queued_seconds: float) -> None:
        return None

    def output(self, job: Any, payload: Any) -> None:
        return None

    def finished(self, job: Any) -> None:
        self.dispatcher.job_ended(self.queue, job)


class Dispatcher:
    def __init__(self, store: ObjectStore, config: WebhookConfig) -> None:
        self.store = store
        self.config = config
        self.keys = KeyWebhooks(config)
        self.backoff = deliver.Backoff(config.first_backoff, config.max_backoff, config.horizon)
        self.deliveries: collections.OrderedDict[str, Delivery] = collections.OrderedDict()
        self.armed: dict[str, Notify] = {}
        self._prefixes: set[str] = set()
        self._replica = 0
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self.on_attempt: list[Callable[[Delivery], None]] = []  # told after each attempt (tests, metrics)

    # -- wiring ---------------------------------------------------------------------------------
    def observe(self, queue: Any) -> None:
        """Send the webhooks of ``queue``'s jobs; its job ids are this server's to deliver after a restart."""
        queue.observers.append(_QueueHook(self, queue))
        queue.webhooks = self
        self._prefixes.add(queue.id_prefix)
        self._replica = queue.ids.replica

    def owns(self, job_id: str) -> bool:
        owner = job_owner(job_id)
        return job_id.split("-", 1)[0] in self._prefixes and (owner.replica if owner else 0) == self._replica

    async def start(self) -> None:
        """Take up this server's pending deliveries and armed jobs, then run the attempts."""
        pending, armed = await asyncio.to_thread(self._load)
        for delivery in pending:
            self.deliveries[delivery.job_id] = delivery
        self.armed.update(armed)
        if pending or armed:
            log.info("webhooks_taken_up", pending=len(pending), armed=len(armed))
        self._loop_task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop attempting: attempts under way get one timeout to finish; what is pending stays in
        the store for the next start."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.timeout)
        for task in list(self._tasks):
            task.cancel()

    def _load(self) -> tuple[list[Delivery], dict[str, Notify]]:
        pending: list[Delivery] = []
        armed: dict[str, Notify] = {}
        try:
            for entry in self.store.list(OUTPUTS, PENDING):
                job_id = entry.key.removeprefix(PENDING).removesuffix(".json")
                if self.owns(job_id):
                    pending.append(Delivery.from_bytes(self.store.get_bytes(OUTPUTS, entry.key)))
            for entry in self.store.list(OUTPUTS, ARMED):
                job_id = entry.key.removeprefix(ARMED).removesuffix(".json")
                if self.owns(job_id):
                    data = json.loads(self.store.get_bytes(OUTPUTS, entry.key))
                    armed[job_id] = Notify(data["url"], data["client_id"])
        except GenmeshError as exc:  # e.g. no outputs bucket yet: nothing was ever pending
            log.warning("webhooks_not_taken_up", error=exc.message)
        return pending, armed

    # -- the job lifecycle (event loop thread) -------------------------------------------------
    def queued(self, queue: Any, job: Any) -> None:
        if job.notify is None and job.id in self.armed:  # a resumed job: its webhook from before the restart
            job.notify = self.armed[job.id]
        if job.notify is not None and getattr(queue, "resumes_jobs", False) and job.id not in self.armed:
            self.armed[job.id] = job.notify
            data = json.dumps({"url": job.notify.url, "client_id": job.notify.client_id}).encode()
            self._background(self._put, f"{ARMED}{job.id}.json", data)

    def job_ended(self, queue: Any, job: Any) -> None:
        notify = job.notify
        if notify is None:
            return
        if getattr(queue, "resumes_jobs", False) and job.cancel_reason == SHUTTING_DOWN:
            return  # stopped by a drain: it resumes after the restart and ends then
        describe = getattr(queue, "describe", None)
        if describe is None:
            log.warning("webhook_not_sent", job_id=job.id, reason="the queue has no Job message")
            return
        ended = job.ended_at or time.time()
        delivery = Delivery(job.id, notify.url, notify.client_id, ended, job_json(describe(job)), next_attempt_at=ended)
        self.armed.pop(job.id, None)
        task = asyncio.create_task(self._take(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _take(self, delivery: Delivery) -> None:
        """Persisted before the first attempt, so no attempt's outcome can be overwritten by it."""
        await asyncio.to_thread(self._save, delivery)
        with contextlib.suppress(GenmeshError):
            await asyncio.to_thread(self.store.delete, OUTPUTS, f"{ARMED}{delivery.job_id}.json")
        self._remember(delivery)

    # -- reading ----------------------------------------------------------------------------------
    async def deliveries_of(self, job_id: str) -> list[Delivery]:
        """The job's deliveries: from memory, else (a restart later) from the store; [] when none."""
        found = self.deliveries.get(job_id)
        if found is not None:
            return [found]
        if job_id in self.armed:
            return []
        try:
            data = await asyncio.to_thread(self.store.get_bytes, OUTPUTS, f"{DONE}{validate_job_id(job_id)}.json")
        except (NotFound, GenmeshError):
            return []
        return [Delivery.from_bytes(data)]

    # -- attempts -------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            now = time.time()
            waiting = [d for d in self.deliveries.values() if d.pending and d.job_id not in self._inflight]
            for delivery in waiting:
                if (delivery.next_attempt_at or 0) <= now:
                    self._inflight.add(delivery.job_id)
                    task = asyncio.create_task(self._attempt(delivery))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            upcoming = [d.next_attempt_at or 0 for d in waiting if d.job_id not in self._inflight]
            self._wake.clear()
            timeout = max(0.0, min(upcoming) - time.time()) if upcoming else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            outcome = await self._post(delivery)
            now = time.time()
            delivery.attempts += 1
            delivery.last_status, delivery.last_error, delivery.last_attempt_at = outcome.status, outcome.error, now
            if outcome.delivered:
                delivery.state, delivery.next_attempt_at = "delivered", None
            elif outcome.final:
                delivery.state, delivery.next_attempt_at = "gave_up", None
            else:
                delivery.next_attempt_at = self.backoff.next_attempt(delivery.ended_at, now, delivery.attempts)
                if delivery.next_attempt_at is None:
                    delivery.state = "gave_up"
            log.info(
                "webhook_attempt",
                job_id=delivery.job_id,
                origin=_origin(delivery.url),
                attempt=delivery.attempts,
                status=outcome.status,
                error=outcome.error,
                state=delivery.state,
                next_in=round(delivery.next_attempt_at - now, 3) if delivery.next_attempt_at else None,
            )
            await asyncio.to_thread(self._save, delivery)
            for hook in self.on_attempt:
                hook(delivery)
        except Exception:  # never lose the loop over one delivery
            log.exception("webhook_attempt_crashed", job_id=delivery.job_id)
        finally:
            self._inflight.discard(delivery.job_id)
            self._wake.set()

    async def _post(self, delivery: Delivery) -> _Outcome:
        """Check the URL again (the allowlist or DNS may have changed) and post; a URL no longer
        allowed, or a client without a secret, ends the delivery."""
        try:
            target = await asyncio.to_thread(allow.check, delivery.url, self.config.allow)
        except InvalidArgument as exc:
            return _Outcome(0, exc.message, final=True)
        secret = await asyncio.to_thread(self.keys.secret, delivery.client_id)
        if not secret:
            return _Outcome(0, f"no webhook secret for client {delivery.client_id!r} any more", final=True)
        outcome = await asyncio.to_thread(
            deliver.post, target, delivery.body.encode(), secret, delivery.job_id, self.config.timeout
        )
        return _Outcome(outcome.status, outcome.error)

    # -- the store ------------------------------------------------------------------------------
    def _remember(self, delivery: Delivery) -> None:
        self.deliveries[delivery.job_id] = delivery
        self.deliveries.move_to_end(delivery.job_id)
        finished = [job_id for job_id, d in self.deliveries.items() if not d.pending]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self.deliveries[job_id]
        self._wake.set()

    def _save(self, delivery: Delivery) -> None:
        """Blocking; never raises (a lost write costs at most a repeated or a missed attempt after a restart)."""
        key = f"{validate_job_id(delivery.job_id)}.json"
        if delivery.pending:
            self._put(f"{PENDING}{key}", delivery.to_bytes())
            return
        self._put(f"{DONE}{key}", dataclasses.replace(delivery, body="").to_bytes())
        with contextlib.suppress(GenmeshError):
            self.store.delete(OUTPUTS, f"{PENDING}{key}")

    def _put(self, key: str, data: bytes) -> None:
        try:
            self.store.put_bytes(OUTPUTS, key, data, content_type="application/json")
        except GenmeshError as exc:
            log.warning("webhook_not_saved", key=key, error=exc.message)

    def _background(self, fn: Callable[..., Any], *args: Any) -> None:
        future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)


def _origin(url: str) -> str:
    """scheme://host:port of a URL: its path may hold a token (n8n's webhook ids), so logs leave it out."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class _Outcome:
    status: int
    error: str
    final: bool = False  # no point trying again

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300
