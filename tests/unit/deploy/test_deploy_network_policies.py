"""The NetworkPolicies (deploy/kubernetes/base/network-policies.yaml), evaluated into the full
who-reaches-whom matrix."""

from __future__ import annotations

from typing import Any

import genmesh.services
from tests.unit.deploy.helpers import (
    KUBE_DNS,
    METRICS,
    MONITORING,
    NAMESPACE_LABELS,
    OUTSIDE,
    SERVICES,
    STRAY,
    WEB_CALLS,
    WEB_PORT,
    _connects,
    by_kind,
    k8s_objects,
)


def test_network_policies_let_only_the_gateway_reach_the_servers(yaml: Any) -> None:
    objects = k8s_objects(yaml, "cpu")
    policies = list(by_kind(objects, "NetworkPolicy").values())
    default_deny = by_kind(objects, "NetworkPolicy")["default-deny"]["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
    pods = {name: (NAMESPACE_LABELS, w["spec"]["template"]["metadata"]["labels"]) for name, w in workloads.items()}
    ports = {
        name: [port["containerPort"] for container in w["spec"]["template"]["spec"]["containers"]
               for port in container.get("ports", [])]
        for name, w in workloads.items()
    }  # fmt: skip
    assert set(pods) == {*SERVICES, "gateway", "minio", "web"}
    expected = {("gateway", name, port) for name, port in SERVICES.items()}
    # Who calls whom directly: the declaration's `calls` (the agent calls text, image and video).
    expected |= {(info.name, callee, SERVICES[callee]) for info in genmesh.services.SERVICES for callee in info.calls}
    assert ("agent", "video", SERVICES["video"]) in expected
    expected |= {(name, "minio", 9000) for name in SERVICES}
    # The web front door: from the gateway only; it calls every server (GET /v1/jobs lists all five).
    expected |= {("gateway", "web", WEB_PORT)} | {("web", name, port) for name, port in WEB_CALLS.items()}
    # Media by presigned URL (no credentials): the gateway routes it, the front door streams videos.
    expected |= {("gateway", "minio", 9000), ("web", "minio", 9000)}
    expected |= {(name, name, port) for name, port in SERVICES.items()}  # replicas forward to each other
    expected |= {("outside", "gateway", 8080)}
    expected |= {("monitoring", "gateway", 8080)} | {("monitoring", name, METRICS) for name in SERVICES}
    peers = {**pods, "outside": OUTSIDE, "stray": STRAY, "monitoring": MONITORING}
    # A component to itself too: one replica calling another (same labels) is a connection like any other.
    allowed = {
        (source, target, port)
        for source, source_pod in peers.items()
        for target, target_pod in pods.items()
        for port in ports[target]
        if _connects(policies, source_pod, target_pod, port)
    }
    # From outside the namespace only the gateway answers; a stray pod of the namespace reaches nothing
    # (its egress is denied); among the components exactly the calls the mesh makes are open.
    assert ("stray", "gateway", 8080) not in allowed
    assert allowed == expected, f"unexpected: {sorted(allowed - expected)}; missing: {sorted(expected - allowed)}"
    for name, pod in pods.items():  # every component resolves names (STRICT_DNS, the S3 endpoint)
        assert _connects(policies, pod, KUBE_DNS, 53, "UDP") and _connects(policies, pod, KUBE_DNS, 53, "TCP"), name
    assert not _connects(policies, pods["text"], OUTSIDE, 443), "servers reach nothing outside the namespace"
    for variant in ("rocm", "cuda"):
        assert len(by_kind(k8s_objects(yaml, variant), "NetworkPolicy")) == len(policies)
