"""The gateway is configured only through `python -m servers.mesh.envoy`, whose output for the exact upstreams
the compose and Kubernetes files set is validated by the real Envoy."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.helpers import (
    COMPOSE,
    DEPLOY,
    DESCRIPTOR,
    DOCKER,
    ROOT,
    TEMPLATE,
    deploy_files,
    needs_envoy,
    rel,
    upstreams_from_compose,
    upstreams_from_kubernetes,
)

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
