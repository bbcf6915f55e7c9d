"""Prometheus metrics of a genmesh server: the metric objects and the HTTP endpoint that serves them.

Everything is derived in the runtime from what it already sees: the job queue's events (submit,
start, outputs, the terminal event; ``QueueMetrics`` observes each queue the server runs), the
model cache's loads, and torch's allocator when torch is in use. Engines and servicers add
nothing. Labels stay bounded: the service's short name, the RPC name, the job state, a payload
kind, a device; never a job id, a model name or a prompt.

Nothing here runs per generated token: a Text job's tokens are counted once, when it ends.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from servers.runtime.events import Output, Payload, TextDelta

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from servers.runtime.queue import Job, JobQueue

# Seconds, from a 50 ms text reply to a day-long training run.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600, 86400)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
RATE_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

JOBS = Counter(
    "genmesh_jobs",
    "Jobs that entered a state (queued, running, succeeded, failed, cancelled)",
    ["service", "method", "state"],
)
QUEUE_DEPTH = Gauge("genmesh_queue_depth", "Jobs waiting in a queue now", ["service", "queue"])
JOBS_RUNNING = Gauge("genmesh_jobs_running", "Jobs running on a queue's workers now", ["service", "queue"])
QUEUE_WAIT = Histogram(
    "genmesh_job_queue_wait_seconds",
    "Time a job waited in the queue before it started",
    ["service", "method"],
    buckets=WAIT_BUCKETS,
)
DURATION = Histogram(
    "genmesh_job_duration_seconds",
    "Running time of a job that started, by how it ended",
    ["service", "method", "state"],
    buckets=DURATION_BUCKETS,
)
STEPS = Counter(
    "genmesh_job_steps",
    "Steps jobs reached: tokens (text), denoising steps (image, video), optimizer steps (training), items (tasks)",
    ["service", "method"],
)
STEP_RATE = Histogram(
    "genmesh_job_steps_per_second",
    "Per job: steps reached over the time until the last one (tokens/s for text, steps/s for diffusion)",
    ["service", "method"],
    buckets=RATE_BUCKETS,
)
TOKENS = Counter("genmesh_generated_tokens", "Tokens generated (streamed in text deltas)", ["service", "method"])
OUTPUTS = Counter(
    "genmesh_job_outputs",
    "Streamed outputs by kind: epoch_completed (training epochs), checkpoint_saved, stage_changed, ...",
    ["service", "method", "kind"],
)
MODEL_LOAD = Histogram(
    "genmesh_model_load_seconds", "Model loads (_count) and how long each took", ["service"], buckets=LOAD_BUCKETS
)

_process_service = ""  # this process's service: labels the process-wide metrics (model loads, memory)


def service_label(proto_service: str, fallback: str) -> str:
    """``genmesh.training.v1.TrainingService`` -> ``training`` (a queue without a service: its name)."""
    parts = proto_service.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "genmesh" else fallback


def method_label(method: str) -> str:
    """``genmesh.text.v1.TextService/Generate`` -> ``Generate``."""
    return method.rpartition("/")[2]


def kind_label(payload: Payload) -> str:
    """``EpochCompleted`` -> ``epoch_completed``: one value per payload class, so it stays bounded."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(payload).__name__).lower()


class QueueMetrics:
    """One job queue's metrics, as an observer of the queue (``observe``). Called on the event loop
    thread, once per job event except progress and text deltas (the per-token path adds nothing here)."""

    def __init__(self, service: str, queue: str, depth: Callable[[], int], running: Callable[[], int]) -> None:
        self.service = service
        # Read when scraped, so submitting and taking jobs update nothing.
        QUEUE_DEPTH.labels(service, queue).set_function(depth)
        JOBS_RUNNING.labels(service, queue).set_function(running)

    @classmethod
    def observe(cls, queue: JobQueue) -> QueueMetrics:
        """Attach metrics to ``queue`` (the server does it for every queue of its service)."""
        metrics = cls(service_label(queue.service, queue.name), queue.name, lambda: queue.depth, lambda: queue.running)
        queue.observers.append(metrics)
        return metrics

    def queued(self, job: Job) -> None:
        JOBS.labels(self.service, method_label(job.method), "queued").inc()

    def started(self, job: Job, queued_seconds: float) -> None:
        method = method_label(job.method)
        JOBS.labels(self.service, method, "running").inc()
        QUEUE_WAIT.labels(self.service, method).observe(max(0.0, queued_seconds))

    def output(self, job: Job, payload: Payload) -> None:
        if isinstance(payload, TextDelta):  # tokens are counted once, when the job ends
            return
        OUTPUTS.labels(self.service, method_label(job.method), kind_label(payload)).inc()

    def finished(self, job: Job) -> None:
        """``job`` reached its terminal state (its history is complete)."""
        tokens = sum(
            event.payload.tokens
            for event in job.history
            if isinstance(event, Output) and isinstance(event.payload, TextDelta)
        )
        method, state = method_label(job.method), job.state.value
        JOBS.labels(self.service, method, state).inc()
        if job.started_at is not None and job.ended_at is not None:
            DURATION.labels(self.service, method, state).observe(max(0.0, job.ended_at - job.started_at))
        progress = job.progress
        if progress is not None and progress.step > 0:
            STEPS.labels(self.service, method).inc(progress.step)
            if progress.elapsed_seconds > 0:
                STEP_RATE.labels(self.service, method).observe(progress.step / progress.elapsed_seconds)
        if tokens:
            TOKENS.labels(self.service, method).inc(tokens)


def model_loaded(seconds: float) -> None:
    """A model finished loading in ``seconds`` (called by the model cache, or a service's own loader)."""
    MODEL_LOAD.labels(_process_service).observe(max(0.0, seconds))


class DeviceMemoryCollector(Collector):
    """Device memory from torch's allocator, read when scraped: only when this process already imported
    torch and initialised CUDA/ROCm (a scrape never imports torch nor starts a device context)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        torch: Any = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return
        allocated = GaugeMetricFamily(
            "genmesh_device_memory_allocated_bytes", "Device memory held by tensors now", labels=["service", "device"]
        )
        peak = GaugeMetricFamily(
            "genmesh_device_memory_peak_bytes",
            "Most device memory held by tensors since start",
            labels=["service", "device"],
        )
        for index in range(torch.cuda.device_count()):
            labels = [_process_service, f"cuda:{index}"]
            allocated.add_metric(labels, torch.cuda.memory_allocated(index))
            peak.add_metric(labels, torch.cuda.max_memory_allocated(index))
        yield allocated
        yield peak


REGISTRY.register(DeviceMemoryCollector())


@dataclass
class MetricsEndpoint:
    """The HTTP server answering ``GET /metrics`` (Prometheus text format) in a daemon thread."""

    host: str
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(service: str, host: str, port: int) -> MetricsEndpoint:
    """Serve this process's metrics on ``host:port`` (0: a free port) as the server ``service``."""
    global _process_service
    _process_service = service
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise RuntimeError(f"metrics port {host}:{port} cannot be used ({exc}); set --metrics-port") from None
    return MetricsEndpoint(host, server, thread)
