"""The compose and Kubernetes files, rendered from the service declaration (``genmesh.services``).

Rendered rather than patched (a kustomize base plus a patch per service would still need a patch
file per new service, and compose has no such mechanism): each server's Kubernetes manifest comes
whole from ``deploy/kubernetes/templates/server.yaml.tmpl``; in the hand-written files (compose,
the gateway, the NetworkPolicies, the GPU and mTLS components) the per-service parts sit between
``# >>> rendered: <block>`` and ``# <<< rendered: <block>`` lines and are rewritten from the
declaration, so a new service appears everywhere, who may call whom follows its ``calls``, and the
server images install its ``extra``.
The rendered files are committed (a deploy needs no Python); ``tests/unit/deploy/
test_deploy_rendered.py`` fails when they are stale.

    python -m servers.mesh.deploy_files          # rewrite them
    python -m servers.mesh.deploy_files --check  # exit 1 naming the stale ones
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from string import Template

from genmesh.services import SERVICES, ServiceInfo
from servers.web.settings import LISTED as WEB_LISTED
from servers.web.settings import UPSTREAMS as WEB_UPSTREAMS

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose"
SERVER_TEMPLATE = KUBE / "templates" / "server.yaml.tmpl"
MINIO_PORT = 9000
WEB_PORT = 8088
METRICS_PORT_OFFSET = 1000  # compose: each server's /metrics on its gRPC port + 1000
BLOCK = re.compile(
    r"^(?P<indent>[ ]*)# >>> rendered: (?P<name>[a-z-]+)\n.*?^[ ]*# <<< rendered: (?P=name)\n", re.M | re.S
)


def web_calls() -> list[ServiceInfo]:
    """The declared services the web front door calls (servers/web/settings.py)."""
    return [info for info in SERVICES if info.name in (*WEB_UPSTREAMS, *WEB_LISTED)]


def callers(name: str) -> list[str]:
    """The declared services that call ``name`` directly."""
    return [info.name for info in SERVICES if name in info.calls]


def gpu_services() -> list[ServiceInfo]:
    return [info for info in SERVICES if info.gpu]


# --------------------------------------------------------------------------------------------
# Kubernetes


def _env_entries(pairs: list[tuple[str, str]], indent: str) -> str:
    return "".join(f'\n{indent}- name: {name}\n{indent}  value: "{value}"' for name, value in pairs)


def server_manifest(info: ServiceInfo) -> str:
    deploy = info.deploy
    env = [
        (f"GENMESH_{info.name.upper()}_{callee.upper()}_URL", f"{callee}:{port_of(callee)}") for callee in info.calls
    ]
    env += list(deploy.env)
    loads = deploy.loads_model
    summary = deploy.summary or f"The {info.name} server ({info.proto_service})."
    return Template(SERVER_TEMPLATE.read_text(encoding="utf-8")).substitute(
        summary="\n".join(f"# {line}" for line in summary.splitlines()),
        name=info.name,
        NAME=info.name.upper(),
        port=info.port,
        replicas=deploy.replicas,
        drain=deploy.drain_seconds,
        grace=deploy.grace_seconds,
        env=_env_entries(env, " " * 12),
        probes=(
            "SERVING only once the model is loaded\n          # and until drain starts. The startup probe "
            "allows 10 minutes for the first load."
            if loads
            else "SERVING once it can serve (the services it\n          # calls answer), until drain starts."
        ),
        cpu=deploy.cpu,
        memory=deploy.memory,
        memory_limit=deploy.memory_limit,
        data=deploy.data,
        shm_mount=(
            "\n            - name: dshm            # torch DataLoader workers share batches through /dev/shm"
            "\n              mountPath: /dev/shm"
            if deploy.shm
            else ""
        ),
        scratch_note=(
            ": the built-in model is assembled again on each start. For large weights\n        # use a "
            "PersistentVolumeClaim (ReadOnlyMany if replicas share it), or a volumeClaimTemplate\n        # for one "
            "volume per replica, instead."
            if loads
            else "."
        ),
        data_size=deploy.data_size,
        shm_volume=(
            "\n        - name: dshm\n          emptyDir:\n            medium: Memory\n            sizeLimit: 8Gi"
            if deploy.shm
            else ""
        ),
    )


def port_of(name: str) -> int:
    return next(info.port for info in SERVICES if info.name == name)


def _to(component: str, port: int, indent: str) -> str:
    return (
        f"{indent}- to:\n{indent}    - podSelector: {{matchLabels: {{app.kubernetes.io/component: {component}}}}}\n"
        f"{indent}  ports:\n{indent}    - {{protocol: TCP, port: {port}}}\n"
    )


def _from(components: list[str], port: int, indent: str) -> str:
    sources = "".join(
        f"{indent}    - podSelector: {{matchLabels: {{app.kubernetes.io/component: {c}}}}}\n" for c in components
    )
    return f"{indent}- from:\n{sources}{indent}  ports:\n{indent}    - {{protocol: TCP, port: {port}}}\n"


def server_policy(info: ServiceInfo) -> str:
    """A server's NetworkPolicy: called by the gateway, the web front door when it calls it, and the
    services that declare they call it; it reaches its own replicas, what it calls, and MinIO."""
    sources = ["gateway", *(["web"] if info in web_calls() else []), *callers(info.name)]
    calls = ", ".join(info.calls) if info.calls else "nothing else"
    lines = [
        f"# {info.name}: called by {', '.join(sources)}; calls {calls} (the declaration's `calls`),",
        "# its own replicas and MinIO.",
        "apiVersion: networking.k8s.io/v1",
        "kind: NetworkPolicy",
        "metadata:",
        f"  name: {info.name}",
        "spec:",
        "  podSelector:",
        "    matchLabels:",
        f"      app.kubernetes.io/component: {info.name}",
        "  policyTypes: [Ingress, Egress]",
        "  ingress:",
    ]
    text = "\n".join(lines) + "\n" + _from(sources, info.port, "    ")
    text += "    # Its own replicas: a call forwarded to the replica that owns the job.\n"
    text += _from([info.name], info.port, "    ") + "  egress:\n" + _to(info.name, info.port, "    ")
    text += "".join(_to(callee, port_of(callee), "    ") for callee in info.calls)
    return text + _to("minio", MINIO_PORT, "    ") + "---\n"


def kube_blocks() -> dict[Path, dict[str, Callable[[str], str]]]:
    names = [info.name for info in SERVICES]
    gpu_regex = "|".join(info.name for info in gpu_services())

    def upstreams(indent: str) -> str:
        return "".join(
            f"{indent}- name: GENMESH_UPSTREAM_{info.name.upper()}\n{indent}  value: {info.name}:{info.port}\n"
            for info in SERVICES
        )

    def mtls_patches(indent: str) -> str:
        return "".join(
            f"{indent}- target: {{kind: StatefulSet, name: {name}}}\n{indent}  patch: |-\n{indent}    - {{op: add, "
            f"path: /spec/template/spec/volumes/-, value: {{name: mtls, secret: {{secretName: genmesh-mtls-{name}, "
            f"defaultMode: 0440}}}}}}\n"
            for name in names
        )

    return {
        KUBE / "base" / "kustomization.yaml": {
            "servers": lambda indent: "".join(f"{indent}- {name}.yaml\n" for name in names),
        },
        KUBE / "base" / "gateway.yaml": {"upstreams": upstreams},
        KUBE / "base" / "web.yaml": {
            "web-upstreams": lambda indent: "".join(
                f"{indent}- name: GENMESH_WEB_{info.name.upper()}_URL\n{indent}  value: {info.name}:{info.port}\n"
                for info in web_calls()
            ),
        },
        KUBE / "base" / "network-policies.yaml": {
            "gateway-egress": lambda indent: "".join(_to(info.name, info.port, indent) for info in SERVICES),
            "web-egress": lambda indent: "".join(_to(info.name, info.port, indent) for info in web_calls()),
            "servers": lambda indent: "".join(server_policy(info) for info in SERVICES),
            "metrics": lambda indent: f"{indent}values: [{', '.join(names)}]\n",
            "minio": lambda indent: f"{indent}values: [{', '.join([*names, 'gateway', 'web'])}]\n",
        },
        KUBE / "components" / "rocm" / "kustomization.yaml": {
            "gpu-servers": lambda indent: f'{indent}name: "{gpu_regex}"\n',
        },
        KUBE / "components" / "cuda" / "kustomization.yaml": {
            "gpu-servers": lambda indent: f'{indent}name: "{gpu_regex}"\n',
        },
        KUBE / "components" / "webhooks" / "kustomization.yaml": {
            "servers": lambda indent: f'{indent}name: "{"|".join(names)}"\n',
        },
        KUBE / "components" / "webhooks" / "network-policy.yaml": {
            "servers": lambda indent: f"{indent}values: [{', '.join(names)}]\n",
        },
        KUBE / "components" / "mtls" / "kustomization.yaml": {
            "servers": lambda indent: f'{indent}name: "{"|".join(names)}"\n',
            "server-certificates": mtls_patches,
        },
    }


# --------------------------------------------------------------------------------------------
# Compose


def compose_service(info: ServiceInfo) -> str:
    deploy, name, upper = info.deploy, info.name, info.name.upper()
    env = [(f"GENMESH_{upper}_PORT", f'"{info.port}"')]
    env.append(("GENMESH_DRAIN_SECONDS", f"${{GENMESH_{upper}_DRAIN_SECONDS:-{deploy.drain_seconds}}}"))
    env += [(f"GENMESH_{upper}_{callee.upper()}_URL", f"{callee}:{port_of(callee)}") for callee in info.calls]
    env += [(key, f"${{{key}:-{value}}}") for key, value in (*deploy.env, *deploy.compose_env)]
    lines = [
        f"  {name}:",
        "    <<: *server",
        f'    command: ["python3", "-m", "servers", "{name}"]',
        "    environment:",
        "      <<: *server-env",
        *(f"      {key}: {value}" for key, value in env),
        f'    expose: ["{info.port}"]',
        "    volumes:",
        f"      - {name}-data:/data      # {deploy.data}",
        *(f"      - {volume}" for volume in deploy.compose_volumes),
        *(["    shm_size: 8gb            # torch DataLoader workers share batches through /dev/shm"] * deploy.shm),
        "    healthcheck:",
        "      <<: *server-health",
        f'      test: ["CMD", "python3", "/app/deploy/docker/healthcheck.py", "{info.port}"]',
        f"    stop_grace_period: {deploy.grace_seconds}s   # > GENMESH_DRAIN_SECONDS: running jobs finish first",
    ]
    if info.calls:
        lines.append("    depends_on:")
        lines += [f"      {callee}:\n        condition: service_started" for callee in info.calls]
    return "\n".join(lines) + "\n\n"


def compose_blocks() -> dict[Path, dict[str, Callable[[str], str]]]:
    gpu = gpu_services()
    return {
        COMPOSE / "compose.yaml": {
            "servers": lambda indent: "".join(compose_service(info) for info in SERVICES),
            "upstreams": lambda indent: "".join(
                f"{indent}GENMESH_UPSTREAM_{info.name.upper()}: {info.name}:{info.port}\n" for info in SERVICES
            ),
            "volumes": lambda indent: "".join(f"{indent}{info.name}-data:\n" for info in SERVICES),
            "web-upstreams": lambda indent: "".join(
                f"{indent}GENMESH_WEB_{info.name.upper()}_URL: {info.name}:{info.port}\n" for info in web_calls()
            ),
            "web-metrics": lambda indent: (
                f"{indent}GENMESH_WEB_METRICS_URLS: "
                + ",".join(f"{info.name}={info.name}:{info.port + METRICS_PORT_OFFSET}" for info in web_calls())
                + "\n"
            ),
        },
        COMPOSE / "compose.rocm.yaml": {
            "gpu-servers": lambda indent: "".join(
                f"{indent}{info.name}:\n{indent}  <<: *rocm\n{indent}  environment:\n{indent}    <<: *rocm-env\n"
                f"{indent}    HIP_VISIBLE_DEVICES: ${{GENMESH_{info.name.upper()}_GPU:-0}}\n"
                for info in gpu
            ),
        },
        COMPOSE / "compose.cuda.yaml": {
            "gpu-servers": lambda indent: "".join(
                f"{indent}{info.name}:\n{indent}  <<: *cuda\n{indent}  environment:\n{indent}    <<: *cuda-env\n"
                f"{indent}  deploy:\n{indent}    resources:\n{indent}      reservations:\n{indent}        devices:\n"
                f"{indent}          - driver: nvidia\n"
                f'{indent}            device_ids: ["${{GENMESH_{info.name.upper()}_GPU:-0}}"]\n'
                f"{indent}            capabilities: [gpu]\n"
                for info in gpu
            ),
        },
    }


def docker_blocks() -> dict[Path, dict[str, Callable[[str], str]]]:
    """The server images install every declared server's extra by default."""
    extras = ",".join(dict.fromkeys(info.extra for info in SERVICES if info.extra))
    block = {"extras": lambda indent: f"{indent}ARG GENMESH_EXTRAS={extras}\n"}
    return {DEPLOY / "docker" / f"Dockerfile.{flavour}": block for flavour in ("cpu", "rocm", "cuda")}


# --------------------------------------------------------------------------------------------
# Files


def fill_blocks(text: str, blocks: dict[str, Callable[[str], str]], where: Path) -> str:
    """``text`` with each rendered block's body rewritten; every block must be there exactly once."""
    seen: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, indent = match["name"], match["indent"]
        if name not in blocks:
            raise ValueError(f"{where}: unknown rendered block {name!r}")
        seen.append(name)
        return f"{indent}# >>> rendered: {name}\n{blocks[name](indent)}{indent}# <<< rendered: {name}\n"

    text = BLOCK.sub(replace, text)
    missing = sorted(set(blocks) - set(seen))
    if missing or len(seen) != len(set(seen)):
        raise ValueError(f"{where}: rendered blocks missing or repeated: {missing or seen}")
    return text


def rendered_files() -> dict[Path, str]:
    """Every deploy file the declaration renders, path -> its text as it should be."""
    files = {KUBE / "base" / f"{info.name}.yaml": server_manifest(info) for info in SERVICES}
    for path, blocks in {**kube_blocks(), **compose_blocks(), **docker_blocks()}.items():
        files[path] = fill_blocks(path.read_text(encoding="utf-8"), blocks, path)
    return files


def stale_files() -> list[Path]:
    return [path for path, text in rendered_files().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servers.mesh.deploy_files", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which files are stale (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(REPO_ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in rendered_files().items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
