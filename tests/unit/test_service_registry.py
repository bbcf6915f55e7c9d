"""Every service is declared once (genmesh.services + servers/registry.py) and everything else
follows from that: settings defaults, `python -m servers <name>`, the launcher, the gateway."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from genmesh.services import BY_NAME, SERVICES, service_for_job
from servers.mesh.envoy import LIBRARY, render_envoy_config
from servers.mesh.launcher import DESCRIPTOR_PATH, implemented_services
from servers.registry import SERVERS, _load


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_server_declares_importable_settings_with_its_port(name: str) -> None:
    spec = SERVERS[name]
    settings = _load(spec.settings)
    assert settings.__dataclass_fields__["port"].default == BY_NAME[name].port
    assert spec.service.startswith(f"servers.{name}.service:")


def test_every_declared_proto_service_exists() -> None:
    from servers.runtime.server import genmesh_service_names

    assert {service.proto_service for service in SERVICES} <= set(genmesh_service_names())


def test_job_ids_route_to_their_service_and_prefixes_are_unique() -> None:
    prefixes = [prefix for service in SERVICES for prefix in service.job_prefixes]
    assert len(prefixes) == len(set(prefixes))
    assert service_for_job("vid-0123abcd").name == "video"
    assert service_for_job("tsk-1").name == "training"
    assert service_for_job("nope-1") is None and service_for_job("") is None


def test_launcher_and_gateway_follow_the_declaration(tmp_path) -> None:
    assert implemented_services() == [service.name for service in SERVICES]
    config = yaml.safe_load(
        render_envoy_config(
            listen_port=8080, admin_port=9901, descriptor_path=DESCRIPTOR_PATH, api_keys={"ci": "k"},
            upstreams={}, rate_limit_rps=1, rate_limit_burst=1,
        )
    )  # fmt: skip
    clusters = [cluster["name"] for cluster in config["static_resources"]["clusters"]]
    # Beside the services: the web front door (OpenAI routes, console) and the object store (presigned media).
    assert clusters == ["any", *(service.name for service in SERVICES), "web", "media"]
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {
        route["match"]["prefix"]: route["route"]["cluster"]
        for route in manager["route_config"]["virtual_hosts"][0]["routes"]
        if "route" in route and "prefix" in route["match"]  # the gRPC routes (the web's are paths and regexes)
    }
    for service in SERVICES:
        assert routes[f"/{service.proto_package}."] == service.name
    transcoder = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder")
    # Every service, and the outputs library that every server answers (routed to any of them).
    assert transcoder["typed_config"]["services"] == [*(service.proto_service for service in SERVICES), LIBRARY]
    assert routes["/genmesh.library.v1."] == "any"
    # The strict JSON check before the transcoder knows every service's REST routes.
    lua = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.lua")
    for service in SERVICES:
        assert f'"{service.proto_package}.' in lua["typed_config"]["default_source_code"]["inline_string"]


def test_python_m_servers_names_the_choices() -> None:
    done = subprocess.run([sys.executable, "-m", "servers"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "text" in done.stderr and "video" in done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "servers", "video", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "--motion-adapter" in helped.stdout
