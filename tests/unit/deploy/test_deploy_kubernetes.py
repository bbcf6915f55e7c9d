"""The Kubernetes files (deploy/kubernetes): every variant builds with kustomize and validates against the
schemas; servers are StatefulSets with a peers Service; the gateway and web front door Deployments."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from servers.runtime.settings import parse_settings
from servers.web.settings import WebSettings
from tests.unit.deploy.helpers import (
    GPU_SERVICES,
    K8S_VARIANTS,
    KUBE,
    METRICS,
    METRICS_PORT,
    SCRAPE,
    SECRET_NAME,
    SERVICES,
    WEB_CALLS,
    WEB_ENV,
    WEB_PORT,
    by_kind,
    env_of,
    k8s_objects,
    kustomize_command,
    load_docs,
    rel,
)


@pytest.mark.parametrize("variant", sorted(K8S_VARIANTS))
def test_kustomizations_build(yaml: Any, variant: str) -> None:
    objects = k8s_objects(yaml, variant)
    kinds = Counter(obj["kind"] for obj in objects)
    # Every server is a StatefulSet (and MinIO); the gateway and the web front door are Deployments.
    assert kinds["Namespace"] == 1 and kinds["StatefulSet"] == len(SERVICES) + 1 and kinds["Deployment"] == 2, kinds
    assert kinds["Secret"] == 0, "Secrets are created out of band, never from the kustomization"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "genmesh", obj["metadata"]["name"]

    statefulsets, services = by_kind(objects, "StatefulSet"), by_kind(objects, "Service")
    config = by_kind(objects, "ConfigMap")["genmesh-server"]["data"]
    for name, port in SERVICES.items():
        assert services[name]["spec"]["clusterIP"] == "None", f"{name}: the gateway needs a headless Service"
        assert services[name]["spec"]["ports"][0]["port"] == port
        pod = statefulsets[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python3", "-m", "servers", name]
        assert container["ports"] == [{"name": "grpc", "containerPort": port}, METRICS_PORT]
        assert statefulsets[name]["spec"]["template"]["metadata"]["annotations"] == SCRAPE, name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, f"{name}: {probe} must be a native gRPC probe"
        env = env_of(container)
        assert env[f"GENMESH_{name.upper()}_PORT"]["value"] == str(port)
        assert env.get("GENMESH_METRICS_PORT", {}).get("value", config["GENMESH_METRICS_PORT"]) == str(METRICS)
        drain = float(env["GENMESH_DRAIN_SECONDS"]["value"])
        assert pod["terminationGracePeriodSeconds"] >= drain + 20, f"{name}: no time left to drain"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        limits = container["resources"]["limits"]
        gpu = {"cpu": None, "rocm": "amd.com/gpu", "cuda": "nvidia.com/gpu"}[variant]
        assert container["image"] == f"genmesh-server:{variant}"
        if gpu and name in GPU_SERVICES:
            assert limits[gpu] == "1", f"{name}: no {gpu} request"
            assert env["GENMESH_GPU_LAYERS"]["value"] == "-1"
        else:
            assert not any(key.endswith("/gpu") for key in limits)
        if variant == "rocm" and name in GPU_SERVICES:
            assert env["HSA_OVERRIDE_GFX_VERSION"]["value"] == "10.3.0"
            assert "PYTORCH_HIP_ALLOC_CONF" in env
    assert statefulsets["text"]["spec"]["replicas"] >= 1


@pytest.mark.parametrize("variant", sorted(K8S_VARIANTS))
def test_servers_are_statefulsets_with_a_peers_service(yaml: Any, variant: str) -> None:
    """Replicas (issue 9): pods <svc>-<n> whose names give the replica number, each reachable as
    <svc>-<n>.<svc>-peers (ready or not) for calls forwarded to a job's owner; the gateway keeps
    resolving the ready-only Service <svc>."""
    objects = k8s_objects(yaml, variant)
    statefulsets, services = by_kind(objects, "StatefulSet"), by_kind(objects, "Service")
    assert set(by_kind(objects, "Deployment")) == {"gateway", "web"}
    for name, port in SERVICES.items():
        workload = statefulsets[name]
        spec = workload["spec"]
        assert spec["serviceName"] == f"{name}-peers", name
        assert spec["podManagementPolicy"] == "Parallel", name
        # A StatefulSet replaces a pod after deleting it (never a surge onto a GPU that is not there).
        assert "strategy" not in spec and spec["updateStrategy"]["type"] == "RollingUpdate", name
        assert "partition" not in spec["updateStrategy"].get("rollingUpdate", {}), name
        selector = spec["selector"]["matchLabels"]
        assert selector.items() <= spec["template"]["metadata"]["labels"].items(), name

        ready, peers = services[name]["spec"], services[f"{name}-peers"]["spec"]
        assert not ready.get("publishNotReadyAddresses", False), f"{name}: Envoy must resolve ready pods only"
        assert peers["clusterIP"] == "None", f"{name}-peers: per-pod DNS names need a headless Service"
        assert peers["publishNotReadyAddresses"] is True, f"{name}-peers: a draining pod must still resolve"
        assert peers["selector"] == ready["selector"] == selector, name
        (peer_port,) = peers["ports"]
        assert peer_port["port"] == port and peer_port["targetPort"] == "grpc", name

        (container,) = spec["template"]["spec"]["containers"]
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        env = env_of(container)
        assert env["GENMESH_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, name
        assert "GENMESH_REPLICA" not in env, f"{name}: the replica number comes from the pod name"
        peers_value = env["GENMESH_PEERS"]["value"]
        assert peers_value == f"{name}-{{n}}.{name}-peers:{port}", name
        # The template is the StatefulSet's own pod DNS name, <statefulset>-<ordinal>.<serviceName>,
        # on the port the pods serve gRPC on.
        host, _, template_port = peers_value.rpartition(":")
        assert host == f"{workload['metadata']['name']}-{{n}}.{spec['serviceName']}", name
        assert int(template_port) == grpc_port == port, name


def test_gateway_deployment_renders_with_servers_mesh_envoy(yaml: Any) -> None:
    objects = k8s_objects(yaml, "cpu")
    pod = by_kind(objects, "Deployment")["gateway"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"] == ["python3", "-m", "servers.mesh.envoy"]
    args = init["args"]
    assert args[args.index("--descriptor") + 1] == "/app/deploy/envoy/genmesh.pb"
    assert "--validate" in args
    out = args[args.index("--out") + 1]
    env = env_of(init)
    services = by_kind(objects, "Service")
    for name, port in SERVICES.items():
        assert env[f"GENMESH_UPSTREAM_{name.upper()}"]["value"] == f"{name}:{port}"
        assert name in services
    # The web front door and MinIO (media by presigned URL), by their Services.
    assert env["GENMESH_UPSTREAM_WEB"]["value"] == f"web:{WEB_PORT}"
    assert services["web"]["spec"]["ports"][0]["port"] == WEB_PORT
    assert env["GENMESH_UPSTREAM_MEDIA"]["value"] == "minio:9000"
    assert any(port["port"] == 9000 for port in services["minio"]["spec"]["ports"])
    envoy, keys_sync = pod["containers"]
    assert env_of(envoy)["GENMESH_ENVOY_CONFIG"]["value"] == out
    assert envoy["args"] == ["serve"]

    # Keys: the Secret is a volume (it updates in place, an env var would not) that only the
    # initContainer and keys-sync mount; both write the keys into the in-memory volume Envoy watches.
    keys_file, keys_dir = args[args.index("--keys-file") + 1], args[args.index("--keys-dir") + 1]
    assert keys_sync["command"] == ["python3", "-m", "servers.mesh.keys_sync"]
    sync_args = keys_sync["args"]
    assert "--watch" in sync_args
    assert sync_args[sync_args.index("--keys-file") + 1] == keys_file
    assert sync_args[sync_args.index("--keys-dir") + 1] == keys_dir
    (secret_volume,) = [volume for volume in pod["volumes"] if "secret" in volume]
    assert secret_volume["secret"]["secretName"] == "genmesh-api-keys"
    assert secret_volume["secret"]["defaultMode"] == 0o440
    mounts = {c["name"]: {m["name"]: m for m in c["volumeMounts"]} for c in [init, *pod["containers"]]}
    seeing_the_secret = [name for name, by_name in mounts.items() if secret_volume["name"] in by_name]
    assert seeing_the_secret == ["render-config", "keys-sync"]
    assert keys_file.startswith(mounts["keys-sync"][secret_volume["name"]]["mountPath"] + "/")
    assert keys_file.rsplit("/", 1)[1] == "GENMESH_API_KEYS"  # the key the Secret has always held
    for name in ("render-config", "keys-sync", "envoy"):
        assert keys_dir.startswith(mounts[name]["envoy-config"]["mountPath"] + "/"), name
    assert mounts["envoy"]["envoy-config"]["readOnly"] is True
    for container in [init, *pod["containers"]]:
        assert not any(name.startswith("GENMESH_API_KEYS") for name in env_of(container)), "keys come from the file"
    assert env_of(keys_sync)["GENMESH_RATE_LIMIT_RPS"] == env["GENMESH_RATE_LIMIT_RPS"]
    assert env_of(keys_sync)["GENMESH_RATE_LIMIT_BURST"] == env["GENMESH_RATE_LIMIT_BURST"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "envoy-config")
    assert config_volume["emptyDir"]["medium"] == "Memory"
    assert pod["terminationGracePeriodSeconds"] > int(env_of(envoy)["GENMESH_GATEWAY_DRAIN_SECONDS"]["value"])
    assert by_kind(objects, "Service")["gateway"]["spec"]["ports"][0]["port"] == 8080
    # No second Envoy config: nothing in the manifests carries one.
    assert not any(obj["kind"] == "ConfigMap" and "static_resources" in str(obj.get("data")) for obj in objects)


@pytest.mark.parametrize("variant", sorted(K8S_VARIANTS))
def test_web_front_door_deployment(yaml: Any, variant: str) -> None:
    """The front door in every variant: the gateway image (no GPU), hardened like the gateway, a
    headless Service the gateway resolves, every server at its Service, readiness on /livez."""
    objects = k8s_objects(yaml, variant)
    deployment, service = by_kind(objects, "Deployment")["web"], by_kind(objects, "Service")["web"]
    services = by_kind(objects, "Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "genmesh-gateway:latest"
    assert container["command"] == ["python3", "-m", "servers.web"]
    assert container["ports"] == [{"name": "http", "containerPort": WEB_PORT}]
    assert service["spec"]["clusterIP"] == "None", "the gateway balances and health-checks each pod"
    assert service["spec"]["ports"] == [{"name": "http", "port": WEB_PORT, "targetPort": "http"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    env = {name: entry["value"] for name, entry in env_of(container).items()}
    assert set(env) <= WEB_ENV, f"settings the front door does not read: {sorted(set(env) - WEB_ENV)}"
    settings = parse_settings(WebSettings, [], env)  # exactly what the pod's process will parse
    assert (settings.host, settings.port) == ("0.0.0.0", WEB_PORT)
    assert settings.upstream_urls() == {name: f"{name}:{port}" for name, port in WEB_CALLS.items()}
    for name in SERVICES:
        assert services[name]["spec"]["clusterIP"] == "None", name  # ready pods, round-robin over replicas
    assert not any(SECRET_NAME.search(name) for name in env), "it holds no key and no S3 credential"
    assert "envFrom" not in container

    # Readiness on /livez: /health is 503 while a service is down, which would take the console away.
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/livez", "port": "http"}, probe
    assert not any(key.endswith("/gpu") for key in container["resources"].get("limits", {}))
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    hardening = container["securityContext"]
    assert hardening["allowPrivilegeEscalation"] is False and hardening["readOnlyRootFilesystem"] is True
    assert hardening["capabilities"] == {"drop": ["ALL"]}
    assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"]), "multipart uploads spool to /tmp"
    stop_wait = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > stop_wait + 30, "uvicorn's graceful shutdown takes up to 30 s"


def test_kubernetes_objects_validate_against_the_schemas(yaml: Any) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (add it to the dev extra)"
    )
    documents = [(rel(KUBE / "secrets.example.yaml"), doc) for doc in load_docs(yaml, KUBE / "secrets.example.yaml")]
    if kustomize_command() is None:  # no kustomize: at least the base manifests as written
        documents += [
            (rel(path), doc) for path in sorted((KUBE / "base").glob("*.yaml")) for doc in load_docs(yaml, path)
        ]
        documents = [(where, doc) for where, doc in documents if doc.get("kind") != "Kustomization"]
    else:
        for variant in K8S_VARIANTS:
            documents += [(f"kustomize build ({variant})", obj) for obj in k8s_objects(yaml, variant)]
    versions = ["1.29.0", kubernetes_validate.latest_version()]  # native gRPC probes are GA since 1.27
    failures = []
    for where, doc in documents:
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                failures.append(f"{where}: {doc['kind']}/{doc['metadata']['name']} ({version}): {exc.message}")
    assert not failures, "\n".join(failures)


def test_kubernetes_secrets_come_from_secret_refs(yaml: Any) -> None:
    for path in (KUBE / "base").glob("*.yaml"):
        for doc in load_docs(yaml, path):
            if doc.get("kind") == "ConfigMap":
                assert not any(SECRET_NAME.search(key) for key in doc["data"]), f"{rel(path)}: a secret in a ConfigMap"
            pod = (doc.get("spec") or {}).get("template", {}).get("spec")
            if not pod:
                continue
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                for name, entry in env_of(container).items():
                    if SECRET_NAME.search(name) or name.startswith("MINIO_ROOT_"):
                        assert "secretKeyRef" in entry.get("valueFrom", {}), (
                            f"{rel(path)}: {name} must come from a Secret"
                        )
