"""The mTLS component (deploy/kubernetes/components/mtls): certificates, probes and patch targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.helpers import (
    K8S_VARIANTS,
    KUBE,
    MONITORING,
    NAMESPACE_LABELS,
    OUTSIDE,
    SERVICES,
    STRAY,
    _connects,
    build_with_component,
    by_kind,
    env_of,
    load_docs,
    rel,
)

MTLS_HEALTH_PORT = 9465  # components/mtls: the plaintext grpc.health.v1 port the kubelet probes


def _mtls_mount(pod: dict, container: dict, component: str) -> str:
    """Where ``container`` mounts the component's own mTLS Secret (read-only, group-readable only)."""
    (volume,) = [v for v in pod["volumes"] if v["name"] == "mtls"]
    assert volume["secret"] == {"secretName": f"genmesh-mtls-{component}", "defaultMode": 0o440}, component
    mount = next(m for m in container["volumeMounts"] if m["name"] == "mtls")
    assert mount["readOnly"] is True, component
    return mount["mountPath"]


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_mtls_component_gives_the_gateway_and_every_server_its_certificate(
    yaml: Any, tmp_path: Path, variant: str
) -> None:
    objects = build_with_component(yaml, tmp_path, K8S_VARIANTS[variant], "mtls")
    deployments, statefulsets = by_kind(objects, "Deployment"), by_kind(objects, "StatefulSet")
    gateway = deployments["gateway"]["spec"]["template"]["spec"]
    (init,) = gateway["initContainers"]
    tls_dir = init["args"][init["args"].index("--upstream-tls-dir") + 1]
    assert gateway["containers"][0]["name"] == "envoy"
    for container in (init, gateway["containers"][0]):
        assert _mtls_mount(gateway, container, "gateway") == tls_dir

    for name, grpc_port in SERVICES.items():
        pod = statefulsets[name]["spec"]["template"]["spec"]
        server = pod["containers"][0]
        env = env_of(server)
        assert env["GENMESH_TLS_DIR"]["value"] == _mtls_mount(pod, server, name)
        # The kubelet cannot present a client certificate: every probe asks the plaintext health port.
        assert env["GENMESH_PLAINTEXT_HEALTH_PORT"]["value"] == str(MTLS_HEALTH_PORT) != str(grpc_port)
        assert {"name": "health", "containerPort": MTLS_HEALTH_PORT} in server["ports"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert server[probe]["grpc"] == {"port": MTLS_HEALTH_PORT}, (name, probe)
        assert any(port["containerPort"] == grpc_port for port in server["ports"])  # gRPC (now TLS) unchanged

    # The agent dials Service names: each must be a Service (whose certificate names it: SAN "text", ...).
    services = by_kind(objects, "Service")
    agent_env = env_of(statefulsets["agent"]["spec"]["template"]["spec"]["containers"][0])
    for upstream in ("TEXT", "IMAGE", "VIDEO"):
        host = agent_env[f"GENMESH_AGENT_{upstream}_URL"]["value"].split(":")[0]
        assert host in services and host == upstream.lower()

    # No pod reaches the plaintext health port (only the node's kubelet, which policies do not govern).
    policies = list(by_kind(objects, "NetworkPolicy").values())
    workloads = {**deployments, **statefulsets}
    pods = {name: (NAMESPACE_LABELS, w["spec"]["template"]["metadata"]["labels"]) for name, w in workloads.items()}
    peers = {**pods, "outside": OUTSIDE, "stray": STRAY, "monitoring": MONITORING}
    reached = [(source, target) for source, peer in peers.items() for target in SERVICES
               if _connects(policies, peer, pods[target], MTLS_HEALTH_PORT)]  # fmt: skip
    assert not reached, f"the plaintext health port is open to {reached} (a replica's peers included)"

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for workload in workloads.values():
        kubernetes_validate.validate(workload, kubernetes_validate.latest_version(), True)


def test_mtls_component_targets_the_statefulsets_and_names_the_peer_sans(yaml: Any) -> None:
    """The servers are StatefulSets: a patch aimed at a Deployment of theirs would silently match
    nothing. Forwarded calls dial <svc>-<n>.<svc>-peers, so the certificates must name those too."""
    path = KUBE / "components" / "mtls" / "kustomization.yaml"
    (component,) = load_docs(yaml, path)
    targets = [(patch["target"]["kind"], patch["target"]["name"]) for patch in component["patches"]]
    assert ("Deployment", "gateway") in targets
    for kind, name in targets:
        names = set(name.split("|"))
        assert kind == ("Deployment" if names == {"gateway"} else "StatefulSet"), (kind, name)
        assert names <= {*SERVICES, "gateway"}, name
    patched = {name for kind, pattern in targets if kind == "StatefulSet" for name in pattern.split("|")}
    assert patched == set(SERVICES)
    text = path.read_text()
    for san in ("*.<svc>-peers", "*.<svc>-peers.<namespace>.svc", "*.<svc>-peers.<namespace>.svc.cluster.local"):
        assert san in text, f"{rel(path)} must say server certificates need the SAN {san}"
    assert '"client auth"' in text, "a replica presents its own server certificate when it forwards a call"
    # The web front door dials the servers in plaintext only: the component says so rather than
    # mounting a certificate nothing reads (patched == the servers, above: not the web Deployment).
    assert "servers.web dials the servers over plaintext gRPC" in text
