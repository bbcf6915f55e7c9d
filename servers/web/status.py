"""``GET /v1/status``: each service's health, queue depth and device memory (the console's Status view).

Health is the service's ``grpc.health.v1`` answer, asked by this process as ``/health`` does. The
numbers are the service's own Prometheus gauges (``servers/runtime/metrics.py``: queue depth, jobs
running, torch's device memory, the process's resident memory), read from each replica's
``/metrics`` at the addresses the operator configured (``GENMESH_WEB_METRICS_URLS``; ``genmesh up``
passes its servers'), never at an address a caller chose. Only sums leave this route: no job ids,
client names or prompts, so any key may read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_SECONDS = 2.0
QUEUE_DEPTH = "genmesh_queue_depth"
RUNNING = "genmesh_jobs_running"
DEVICE_ALLOCATED = "genmesh_device_memory_allocated_bytes"
DEVICE_PEAK = "genmesh_device_memory_peak_bytes"
PROCESS_MEMORY = "process_resident_memory_bytes"


def parse_metrics_urls(raw: str) -> dict[str, list[str]]:
    """``text=127.0.0.1:9101,image=127.0.0.1:9102,image=...`` -> service -> [host:port, ...] (a service
    repeats once per replica). ``ValueError`` naming the setting for a malformed entry."""
    targets: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        service, sep, address = (piece.strip() for piece in item.partition("="))
        host, _, port = address.rpartition(":")
        if not (sep and service and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"GENMESH_WEB_METRICS_URLS: expected service=host:port, got {item!r}")
        targets.setdefault(service, []).append(address)
    return targets


def summarize(texts: Iterable[str]) -> dict[str, Any]:
    """The numbers of one service from its replicas' Prometheus texts: queue depth and running jobs
    summed over queues and replicas, device memory per device (replica-numbered when several),
    resident memory summed."""
    texts = list(texts)
    summary: dict[str, Any] = {"queue_depth": 0, "running": 0, "process_memory_bytes": 0, "devices": []}
    for replica, text in enumerate(texts):
        devices: dict[str, dict[str, Any]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == QUEUE_DEPTH:
                    summary["queue_depth"] += int(sample.value)
                elif sample.name == RUNNING:
                    summary["running"] += int(sample.value)
                elif sample.name == PROCESS_MEMORY:
                    summary["process_memory_bytes"] += int(sample.value)
                elif sample.name in (DEVICE_ALLOCATED, DEVICE_PEAK):
                    device = sample.labels.get("device", "")
                    name = f"{device} (replica {replica})" if len(texts) > 1 else device
                    entry = devices.setdefault(device, {"device": name, "allocated_bytes": 0, "peak_bytes": 0})
                    entry["allocated_bytes" if sample.name == DEVICE_ALLOCATED else "peak_bytes"] = int(sample.value)
        summary["devices"] += devices.values()
    return summary


async def scrape(http: httpx.AsyncClient, address: str) -> str:
    response = await http.get(f"http://{address}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS)
    response.raise_for_status()
    return response.text


async def service_numbers(http: httpx.AsyncClient, addresses: Sequence[str]) -> dict[str, Any]:
    """``summarize`` of every replica, or ``metrics`` saying why there are no numbers."""
    if not addresses:
        return {"metrics": "not configured on the web front door (GENMESH_WEB_METRICS_URLS)"}
    try:
        texts = await asyncio.gather(*(scrape(http, address) for address in addresses))
    except (httpx.HTTPError, ValueError) as exc:
        return {"metrics": f"no answer from its /metrics ({type(exc).__name__})"}
    return {"metrics": "ok", **summarize(texts)}


async def status_body(
    http: httpx.AsyncClient, health: Mapping[str, Any], targets: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """``health``: service -> awaitable of its health status name, for every configured service."""
    names = list(health)
    answers = await asyncio.gather(
        *(health[name] for name in names), *(service_numbers(http, targets.get(name, ())) for name in names)
    )
    statuses, numbers = answers[: len(names)], answers[len(names) :]
    return {
        "services": [
            {"service": name, "health": status, "replicas": len(targets.get(name, ())), **values}
            for name, status, values in zip(names, statuses, numbers, strict=True)
        ]
    }


_DEVICE = {
    "type": "object",
    "required": ["device", "allocated_bytes", "peak_bytes"],
    "properties": {
        "device": {"type": "string"},
        "allocated_bytes": {"type": "integer"},
        "peak_bytes": {"type": "integer"},
    },
}
# The answer's shape (the OpenAPI document's): the numbers appear only when /metrics answered.
ANSWER = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "services": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["service", "health", "replicas", "metrics"],
                "properties": {
                    "service": {"type": "string"},
                    "health": {"type": "string", "description": "SERVING, NOT_SERVING or UNAVAILABLE"},
                    "replicas": {"type": "integer", "description": "/metrics addresses configured"},
                    "metrics": {"type": "string", "description": "ok, or why there are no numbers"},
                    "queue_depth": {"type": "integer"},
                    "running": {"type": "integer"},
                    "process_memory_bytes": {"type": "integer"},
                    "devices": {"type": "array", "items": _DEVICE},
                },
            },
        }
    },
}
