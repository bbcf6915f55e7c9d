"""GET /v1/status's numbers (servers/web/status.py): the metrics addresses setting, and the sums read
from the servers' own Prometheus text (written here by prometheus_client, as the servers write it)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from servers.web.settings import WebSettings
from servers.web.status import parse_metrics_urls, summarize


def exposition(queues: dict[str, int], running: int, devices: dict[str, tuple[int, int]], rss: int) -> str:
    """What a server's /metrics says, from the same metric names and labels as servers/runtime/metrics.py."""
    registry = CollectorRegistry()
    depth = Gauge("genmesh_queue_depth", "", ["service", "queue"], registry=registry)
    for queue, value in queues.items():
        depth.labels("image", queue).set(value)
    Gauge("genmesh_jobs_running", "", ["service", "queue"], registry=registry).labels("image", "image").set(running)
    allocated = Gauge("genmesh_device_memory_allocated_bytes", "", ["service", "device"], registry=registry)
    peak = Gauge("genmesh_device_memory_peak_bytes", "", ["service", "device"], registry=registry)
    for device, (now, most) in devices.items():
        allocated.labels("image", device).set(now)
        peak.labels("image", device).set(most)
    Gauge("process_resident_memory_bytes", "", registry=registry).set(rss)
    return generate_latest(registry).decode()


def test_one_replica_gives_its_queue_devices_and_memory() -> None:
    text = exposition({"image": 3, "tasks": 1}, 1, {"cuda:0": (2_000, 5_000)}, 700)
    assert summarize([text]) == {
        "queue_depth": 4,
        "running": 1,
        "process_memory_bytes": 700,
        "devices": [{"device": "cuda:0", "allocated_bytes": 2_000, "peak_bytes": 5_000}],
    }


def test_replicas_are_summed_and_their_devices_told_apart() -> None:
    first = exposition({"image": 2}, 1, {"cuda:0": (10, 20)}, 100)
    second = exposition({"image": 5}, 0, {"cuda:0": (30, 40)}, 200)
    summary = summarize([first, second])
    assert (summary["queue_depth"], summary["running"], summary["process_memory_bytes"]) == (7, 1, 300)
    assert [device["device"] for device in summary["devices"]] == ["cuda:0 (replica 0)", "cuda:0 (replica 1)"]


def test_a_cpu_server_reports_no_devices() -> None:
    assert summarize([exposition({"text": 0}, 0, {}, 50)])["devices"] == []


def test_the_setting_lists_each_replica_and_refuses_a_malformed_entry() -> None:
    assert parse_metrics_urls("text=127.0.0.1:9101, image=127.0.0.1:9102,image=127.0.0.1:9103") == {
        "text": ["127.0.0.1:9101"],
        "image": ["127.0.0.1:9102", "127.0.0.1:9103"],
    }
    assert parse_metrics_urls("") == {}
    for bad in ("text", "text=127.0.0.1", "text=127.0.0.1:0", "=127.0.0.1:9101", "text=:9101"):
        with pytest.raises(ValueError, match="GENMESH_WEB_METRICS_URLS"):
            parse_metrics_urls(bad)
    with pytest.raises(ValueError, match="GENMESH_WEB_METRICS_URLS"):
        WebSettings(metrics_urls="text=localhost")
