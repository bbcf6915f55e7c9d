"""The webhooks component (deploy/kubernetes/components/webhooks): every server reads the gateway's
keys (each key's secret and notify= default), only the servers get out, and only to public addresses
on 80/443; without the component nothing of that exists and webhooks stay off."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.helpers import K8S_VARIANTS, SERVICES, build_with_component, by_kind, env_of, k8s_objects

KEYS_SECRET = "genmesh-api-keys"
KEYS_ENTRY = "GENMESH_API_KEYS"  # the Secret's key (secrets.example.yaml), a file once mounted


def keys_file_of(statefulset: dict) -> str | None:
    """Where the server's GENMESH_API_KEYS_FILE points, checked to be the keys Secret mounted read-only."""
    pod = statefulset["spec"]["template"]["spec"]
    server = pod["containers"][0]
    path = env_of(server).get("GENMESH_API_KEYS_FILE", {}).get("value")
    volumes = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == KEYS_SECRET]
    if path is None:
        assert not volumes
        return None
    (volume,) = volumes
    assert volume["secret"]["defaultMode"] == 0o440
    (mount,) = [m for m in server["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and path == f"{mount['mountPath']}/{KEYS_ENTRY}"
    return path


@pytest.mark.parametrize("variant", ["cpu", "rocm"])
def test_every_server_reads_the_keys_and_only_servers_reach_public_addresses(
    yaml: Any, tmp_path: Path, variant: str
) -> None:
    objects = build_with_component(yaml, tmp_path, K8S_VARIANTS[variant], "webhooks")
    statefulsets = by_kind(objects, "StatefulSet")
    for name in SERVICES:
        assert keys_file_of(statefulsets[name]) is not None, name
    gateway = by_kind(objects, "Deployment")["gateway"]["spec"]["template"]["spec"]
    assert any(v.get("secret", {}).get("secretName") == KEYS_SECRET for v in gateway["volumes"])  # the same Secret

    policy = by_kind(objects, "NetworkPolicy")["webhooks"]["spec"]
    (selector,) = policy["podSelector"]["matchExpressions"]
    assert selector["key"] == "app.kubernetes.io/component" and selector["operator"] == "In"
    assert sorted(selector["values"]) == sorted(SERVICES)  # not the gateway, the web front door or MinIO
    assert policy["policyTypes"] == ["Egress"]
    (rule,) = policy["egress"]
    assert sorted(port["port"] for port in rule["ports"]) == [80, 443]
    (peer,) = rule["to"]
    allowed = ipaddress.ip_network(peer["ipBlock"]["cidr"])
    closed = [ipaddress.ip_network(cidr) for cidr in peer["ipBlock"]["except"]]

    def reachable(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return ip in allowed and not any(ip in network for network in closed)

    # Cloud metadata, loopback, the private ranges and carrier-grade NAT (where pod networks live) stay closed.
    for address in ("169.254.169.254", "127.0.0.1", "10.96.0.1", "172.20.1.1", "192.168.0.10", "100.64.3.4"):
        assert not reachable(address), address
    assert reachable("93.184.215.14") and reachable("1.1.1.1")

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for obj in (by_kind(objects, "NetworkPolicy")["webhooks"], *statefulsets.values()):
        kubernetes_validate.validate(obj, version, True)


def test_without_the_component_webhooks_are_off_and_servers_see_no_keys(yaml: Any) -> None:
    objects = k8s_objects(yaml, "cpu")
    assert by_kind(objects, "ConfigMap")["genmesh-server"]["data"]["GENMESH_WEBHOOK_ALLOW"] == ""
    assert "webhooks" not in by_kind(objects, "NetworkPolicy")
    for name, statefulset in by_kind(objects, "StatefulSet").items():
        assert keys_file_of(statefulset) is None, name
