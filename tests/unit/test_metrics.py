"""Prometheus metrics: what the runtime derives from job events and model loads, the endpoint, the port."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from genmesh.errors import InvalidArgument
from servers.runtime import metrics
from servers.runtime.events import Payload, StageChanged, TextDelta
from servers.runtime.model_cache import ModelCache
from servers.runtime.queue import JobContext, JobQueue
from servers.runtime.server import Server
from servers.runtime.settings import ServerSettings, parse_settings

_names = itertools.count()


def fresh_queue(max_queued: int = 4) -> tuple[JobQueue, str]:
    """A started queue whose service label no other test uses (the registry is process-wide)."""
    name = f"metrics-test-{next(_names)}"
    queue = JobQueue(name=name, id_prefix="m", devices=["cpu"], max_queued=max_queued)
    metrics.QueueMetrics.observe(queue)  # as the server does for each queue of its service
    queue.start()
    return queue, name


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def finish(queue: JobQueue, job) -> None:
    async for _ in queue.events(job):
        pass


class EpochCompleted(Payload):  # shaped like Training's payload: only its class name matters here
    pass


def test_labels_are_short_and_bounded() -> None:
    assert metrics.service_label("genmesh.training.v1.TrainingService", "training-tasks") == "training"
    assert metrics.service_label("", "queue-name") == "queue-name"
    assert metrics.method_label("genmesh.text.v1.TextService/Generate") == "Generate"
    assert metrics.method_label("Generate") == "Generate"
    assert metrics.kind_label(EpochCompleted()) == "epoch_completed"
    assert metrics.kind_label(StageChanged("decoding")) == "stage_changed"


async def test_a_job_is_counted_through_its_states_with_tokens_steps_and_outputs() -> None:
    queue, service = fresh_queue()

    def work(ctx: JobContext) -> str:
        ctx.output(StageChanged("generating"))
        for step in (1, 2, 3):
            ctx.output(TextDelta(f"t{step}"), step, 3)
        ctx.output(EpochCompleted())
        return "ok"

    job = queue.submit(work, method="Generate")
    await finish(queue, job)
    for state in ("queued", "running", "succeeded"):
        assert sample("genmesh_jobs_total", service=service, method="Generate", state=state) == 1
    assert sample("genmesh_jobs_total", service=service, method="Generate", state="failed") == 0
    assert sample("genmesh_generated_tokens_total", service=service, method="Generate") == 3
    assert sample("genmesh_job_steps_total", service=service, method="Generate") == 3
    assert sample("genmesh_job_steps_per_second_count", service=service, method="Generate") == 1
    assert sample("genmesh_job_outputs_total", service=service, method="Generate", kind="epoch_completed") == 1
    assert sample("genmesh_job_outputs_total", service=service, method="Generate", kind="stage_changed") == 1
    assert sample("genmesh_job_outputs_total", service=service, method="Generate", kind="text_delta") == 0
    assert sample("genmesh_job_queue_wait_seconds_count", service=service, method="Generate") == 1
    assert sample("genmesh_job_duration_seconds_count", service=service, method="Generate", state="succeeded") == 1
    await queue.drain(5)


async def test_failed_and_cancelled_jobs_by_state_and_queue_depth() -> None:
    queue, service = fresh_queue()
    release = threading.Event()

    def blocker(ctx: JobContext) -> None:
        release.wait(30)

    def broken(ctx: JobContext) -> None:
        raise InvalidArgument("prompt: empty", field="prompt")

    running = queue.submit(blocker, method="Block")
    waiting = [queue.submit(broken, method="Broken") for _ in range(2)]
    assert sample("genmesh_queue_depth", service=service, queue=service) >= 1  # the blocker may not have started
    queue.cancel(waiting[1].id)
    release.set()
    for job in (running, *waiting):
        await finish(queue, job)
    assert sample("genmesh_jobs_total", service=service, method="Broken", state="queued") == 2
    assert sample("genmesh_jobs_total", service=service, method="Broken", state="failed") == 1
    assert sample("genmesh_jobs_total", service=service, method="Broken", state="cancelled") == 1
    # The job cancelled while it waited never ran: no running time for it.
    assert sample("genmesh_job_duration_seconds_count", service=service, method="Broken", state="cancelled") == 0
    assert sample("genmesh_job_duration_seconds_count", service=service, method="Broken", state="failed") == 1
    await queue.drain(5)
    assert sample("genmesh_queue_depth", service=service, queue=service) == 0
    assert sample("genmesh_jobs_running", service=service, queue=service) == 0


def test_model_cache_counts_loads_not_reuses() -> None:
    service = metrics._process_service
    before = sample("genmesh_model_load_seconds_count", service=service)
    cache = ModelCache(lambda name: name, keep_alive_seconds=0)
    for name in ("a", "a", "b"):
        with cache.use(name):
            pass
    cache.close()
    assert sample("genmesh_model_load_seconds_count", service=service) == before + 2


def test_device_memory_only_when_torch_already_runs_a_device(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = metrics.DeviceMemoryCollector()
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert list(collector.collect()) == []
    cuda = SimpleNamespace(
        is_initialized=lambda: False,
        device_count=lambda: 1,
        memory_allocated=lambda index: 1024,
        max_memory_allocated=lambda index: 4096,
    )
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    assert list(collector.collect()) == []  # torch on the CPU: no device context is started by a scrape
    cuda.is_initialized = lambda: True
    families = {family.name: family for family in collector.collect()}
    allocated = families["genmesh_device_memory_allocated_bytes"].samples[0]
    assert allocated.labels["device"] == "cuda:0" and allocated.value == 1024
    assert families["genmesh_device_memory_peak_bytes"].samples[0].value == 4096


def test_endpoint_serves_the_text_format_on_loopback() -> None:
    endpoint = metrics.serve(metrics._process_service, "127.0.0.1", 0)
    try:
        assert endpoint.port > 0 and endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"
        with urllib.request.urlopen(endpoint.url, timeout=10) as response:
            text = response.read().decode()
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {"genmesh_jobs", "genmesh_model_load_seconds", "genmesh_queue_depth"} <= names
    finally:
        endpoint.close()


def test_a_taken_port_fails_with_the_setting_named() -> None:
    endpoint = metrics.serve(metrics._process_service, "127.0.0.1", 0)
    try:
        with pytest.raises(RuntimeError, match="--metrics-port"):
            metrics.serve(metrics._process_service, "127.0.0.1", endpoint.port)
    finally:
        endpoint.close()


def test_metrics_port_setting() -> None:
    assert parse_settings(ServerSettings, []).resolved_metrics_port() == 51051  # gRPC port + 1000
    assert parse_settings(ServerSettings, ["--port", "6000"]).resolved_metrics_port() == 7000
    assert parse_settings(ServerSettings, ["--port", "0"]).resolved_metrics_port() == 0  # both free ports
    assert parse_settings(ServerSettings, ["--metrics-port", "9464"]).resolved_metrics_port() == 9464
    assert parse_settings(ServerSettings, [], {"GENMESH_METRICS_PORT": "0"}).resolved_metrics_port() == 0


class IdleService:
    name = "idle"
    service_names = ()

    def __init__(self) -> None:
        self.queues = ()

    def register(self, server) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_server_serves_metrics_while_up_and_closes_them_on_stop() -> None:
    server = Server(IdleService(), ServerSettings(port=0, metrics_port=0, drain_seconds=1))
    await server.start()
    assert server.metrics is not None
    url = server.metrics.url
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    assert "genmesh_jobs_total" in text or "# TYPE genmesh_jobs counter" in text
    await server.drain_and_stop()
    assert server.metrics is None
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


async def test_a_taken_derived_port_falls_back_to_a_free_one() -> None:
    taken = metrics.serve(metrics._process_service, "127.0.0.1", 0)
    server = Server(IdleService(), ServerSettings(port=taken.port - 1000, drain_seconds=1))
    try:
        endpoint = server._serve_metrics()
        assert endpoint.port not in (0, taken.port)
        endpoint.close()
        explicit = Server(IdleService(), ServerSettings(port=0, metrics_port=taken.port))
        with pytest.raises(RuntimeError, match="--metrics-port"):
            explicit._serve_metrics()
    finally:
        taken.close()
