"""Prometheus metrics after real jobs: a text, an image and a training job through the gateway, then
each server's /metrics over HTTP on loopback (and Envoy's own stats on its admin port)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers.mesh.launcher import Mesh
from servers.mesh.processes import wait_until
from tests.integration.helpers import sse

pytestmark = pytest.mark.integration

SERVICES = ("text", "image", "video", "training", "agent")
DATA = {"num_images": 16, "width": 96, "height": 96, "degradation_type": "gaussian-noise", "seed": 3,
        "content_kinds": ["CONTENT_KIND_SHAPES"], "dataset_name": "metrics"}  # fmt: skip
SPEC = {"num_epochs": 2, "batch_size": 4, "patch_size": 48, "architecture": "ARCHITECTURE_TINY", "seed": 1}

Samples = list[tuple[str, dict[str, str], float]]


def scrape(mesh: Mesh, service: str) -> Samples:
    response = httpx.get(f"http://127.0.0.1:{mesh.metrics_ports[service]}/metrics", timeout=10)
    response.raise_for_status()
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(value for sample, have, value in samples if sample == name and labels.items() <= have.items())


def idle(mesh: Mesh, services: Iterable[str] = SERVICES) -> bool:
    """No job waits or runs anywhere (so the counts below change only by this test's jobs)."""
    return all(
        total(samples, "genmesh_jobs_running") == 0 and total(samples, "genmesh_queue_depth") == 0
        for samples in (scrape(mesh, service) for service in services)
    )


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


@pytest.fixture
def quiet(mesh: Mesh) -> None:
    wait_until(lambda: idle(mesh), timeout=600, what="every server to finish the jobs of earlier tests")


def test_text_job_counts(mesh, gateway_url, api_key, quiet) -> None:
    before = scrape(mesh, "text")
    body = {"prompt": "Count to five:", "sampling": {"max_tokens": 8, "temperature": 0}}
    status, events = sse(gateway_url, api_key, "/v1/text:generate", body)
    assert status == 200 and events[-1]["state"] == "JOB_STATE_SUCCEEDED"
    tokens = events[-1]["result"]["usage"]["completion_tokens"]
    after = scrape(mesh, "text")
    for state in ("queued", "running", "succeeded"):
        assert delta(before, after, "genmesh_jobs_total", service="text", method="Generate", state=state) == 1
    assert delta(before, after, "genmesh_jobs_total", service="text", state="failed") == 0
    assert delta(before, after, "genmesh_generated_tokens_total", service="text", method="Generate") == tokens
    assert delta(before, after, "genmesh_job_steps_total", service="text", method="Generate") == tokens
    assert delta(before, after, "genmesh_job_steps_per_second_count", service="text", method="Generate") == 1
    assert delta(before, after, "genmesh_job_duration_seconds_count", service="text", state="succeeded") == 1
    assert delta(before, after, "genmesh_job_queue_wait_seconds_count", service="text", method="Generate") == 1
    assert total(after, "genmesh_model_load_seconds_count", service="text") >= 1  # loaded at start
    assert total(after, "genmesh_device_memory_allocated_bytes") == 0  # the Text server never imports torch


def test_image_job_counts(mesh, gateway_url, api_key, quiet) -> None:
    before = scrape(mesh, "image")
    body = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4, "seed": 2}
    status, events = sse(gateway_url, api_key, "/v1/images:generate", body)
    assert status == 200 and events[-1]["state"] == "JOB_STATE_SUCCEEDED", events[-1]
    after = scrape(mesh, "image")
    for state in ("queued", "running", "succeeded"):
        assert delta(before, after, "genmesh_jobs_total", service="image", method="GenerateImage", state=state) == 1
    assert delta(before, after, "genmesh_job_steps_total", service="image", method="GenerateImage") >= 4
    assert delta(before, after, "genmesh_job_steps_per_second_count", service="image", method="GenerateImage") == 1
    assert delta(before, after, "genmesh_job_duration_seconds_count", service="image", state="succeeded") == 1
    assert delta(before, after, "genmesh_generated_tokens_total", service="image") == 0
    assert total(after, "genmesh_model_load_seconds_count", service="image") >= 1  # preloaded at start


def test_training_job_counts_epochs(mesh, gateway_url, api_key, quiet) -> None:
    before = scrape(mesh, "training")
    status, events = sse(gateway_url, api_key, "/v1/training/synthetic-data:generate", DATA)
    assert status == 200 and events[-1]["state"] == "JOB_STATE_SUCCEEDED", events[-1]
    prefix = events[-1]["result"]["dataset_prefix"]
    with httpx.Client(base_url=gateway_url, headers={"x-api-key": api_key}, timeout=300) as http:
        created = http.post("/v1/training/jobs", json={"layer": 9, "dataset_prefix": prefix, **SPEC})
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        with http.stream("GET", f"/v1/training/jobs/{job_id}:watch") as response:  # until the job ends
            watched = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert watched[-1]["state"] == "JOB_STATE_SUCCEEDED", watched[-1]
    after = scrape(mesh, "training")
    assert delta(before, after, "genmesh_jobs_total", service="training", state="succeeded") == 2  # data + training
    assert delta(before, after, "genmesh_jobs_total", service="training", state="failed") == 0
    assert delta(before, after, "genmesh_job_outputs_total", service="training", kind="epoch_completed") == 2
    assert delta(before, after, "genmesh_job_outputs_total", service="training", kind="checkpoint_saved") == 2
    assert delta(before, after, "genmesh_job_steps_total", service="training") > 0
    assert delta(before, after, "genmesh_job_duration_seconds_count", service="training", state="succeeded") == 2


def test_gateway_stats_on_the_admin_port(mesh) -> None:
    assert mesh.envoy is not None
    response = httpx.get(f"{mesh.envoy.admin_url}/stats/prometheus", timeout=10)
    assert response.status_code == 200 and "envoy_cluster_upstream_rq" in response.text
    banner = mesh.banner()
    assert f"{mesh.envoy.admin_url}/stats/prometheus" in banner
    assert all(f"http://127.0.0.1:{mesh.metrics_ports[name]}/metrics" in banner for name in SERVICES)
