"""The compose and Kubernetes files that follow from the service declaration are rendered from it
(``python -m servers.mesh.deploy_files``) and committed: stale files fail here, and a service added
to the declaration appears in every one of them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from genmesh import services
from servers.mesh import deploy_files
from tests.unit.deploy.helpers import COMPOSE, KUBE, rel


def test_rendered_deploy_files_are_up_to_date() -> None:
    stale = [rel(path) for path in deploy_files.stale_files()]
    assert not stale, f"stale: {stale}; run `python -m servers.mesh.deploy_files` and commit the result"


@pytest.fixture
def with_echo(monkeypatch: pytest.MonkeyPatch) -> services.ServiceInfo:
    """The declaration with one more service: a CPU server that calls Text."""
    echo = services.ServiceInfo("echo", "genmesh.echo.v1.EchoService", ("ech",), 50057, gpu=False, calls=("text",))
    monkeypatch.setattr(deploy_files, "SERVICES", (*services.SERVICES, echo))
    return echo


def test_a_new_declared_service_reaches_compose_kubernetes_and_the_policies(yaml: Any, with_echo) -> None:
    files = deploy_files.rendered_files()
    (service, peers, statefulset) = yaml.safe_load_all(files[KUBE / "base" / "echo.yaml"])
    assert service["spec"]["ports"][0]["port"] == peers["spec"]["ports"][0]["port"] == 50057
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python3", "-m", "servers", "echo"]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    assert env["GENMESH_ECHO_PORT"] == "50057" and env["GENMESH_ECHO_TEXT_URL"] == "text:50051"
    assert "- echo.yaml" in files[KUBE / "base" / "kustomization.yaml"]

    compose = yaml.safe_load(files[COMPOSE / "compose.yaml"])
    echo = compose["services"]["echo"]
    assert echo["command"] == ["python3", "-m", "servers", "echo"]
    assert echo["depends_on"] == {"text": {"condition": "service_started"}}
    assert compose["services"]["gateway"]["environment"]["GENMESH_UPSTREAM_ECHO"] == "echo:50057"
    assert "echo-data" in compose["volumes"]
    # No GPU: not in the GPU overrides.
    assert "echo" not in yaml.safe_load(files[COMPOSE / "compose.rocm.yaml"])["services"]
    assert "echo" not in files[KUBE / "components" / "cuda" / "kustomization.yaml"]

    policies = {
        doc["metadata"]["name"]: doc["spec"]
        for doc in yaml.safe_load_all(files[KUBE / "base" / "network-policies.yaml"])
        if doc
    }
    egress = [
        rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in policies["echo"]["egress"]
    ]
    assert egress == ["echo", "text", "minio"]
    text_sources = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for peer in policies["text"]["ingress"][0]["from"]
    }
    assert "echo" in text_sources and "echo" not in str(policies["image"]["ingress"])
    gateway_targets = [
        rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in policies["gateway"]["egress"]
    ]
    assert "echo" in gateway_targets
    assert "echo" in files[KUBE / "components" / "mtls" / "kustomization.yaml"]


def test_gpu_services_get_the_gpu_overrides(yaml: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    text = services.BY_NAME["text"]
    monkeypatch.setattr(deploy_files, "SERVICES", (dataclasses.replace(text, gpu=False), *services.SERVICES[1:]))
    files = deploy_files.rendered_files()
    assert "text" not in yaml.safe_load(files[COMPOSE / "compose.cuda.yaml"])["services"]
    assert "image" in yaml.safe_load(files[COMPOSE / "compose.cuda.yaml"])["services"]
    assert '"image|video|training"' in files[KUBE / "components" / "rocm" / "kustomization.yaml"]


def test_a_block_that_went_missing_is_an_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="missing or repeated"):
        deploy_files.fill_blocks("services:\n", {"servers": lambda indent: ""}, tmp_path / "compose.yaml")


def test_the_rendered_yaml_parses(yaml: Any) -> None:
    for path, text in deploy_files.rendered_files().items():
        if path.suffix == ".yaml":
            assert [doc for doc in yaml.safe_load_all(text) if doc], rel(path)
