"""Every service is declared once (genmesh.services) and everything else follows from that: the
server classes by convention (servers/registry.py), settings defaults, `python -m servers <name>`,
the launcher (start order, the addresses of the services each one calls), the gateway, the clients'
job methods and the CLI's lists."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from genmesh.client import AsyncGenmeshClient, GenmeshClient
from genmesh.client.service_rpcs import job_services, service_rpcs
from genmesh.services import BY_NAME, SERVICES, service_for_job, start_order, stop_waves
from genmesh.training.v1 import training_pb2
from servers.mesh.envoy import LIBRARY, render_envoy_config
from servers.mesh.launcher import DESCRIPTOR_PATH, LaunchOptions, Mesh, implemented_services
from servers.registry import SERVERS, _load, conventional

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_each_server_declares_importable_settings_with_its_port(name: str) -> None:
    spec = SERVERS[name]
    settings = _load(spec.settings)
    assert settings.__dataclass_fields__["port"].default == BY_NAME[name].port
    assert spec.service.startswith(f"servers.{name}.service:")
    assert (spec.settings, spec.service) == conventional(name)  # no service breaks the convention today
    # The service class exists where the convention says (read, not imported: that would load torch).
    module, _, cls = spec.service.partition(":")
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    assert re.search(rf"^class {cls}\b", source, re.M), spec.service


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
    helped = subprocess.run([sys.executable, "-m", "servers", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    for service in SERVICES:
        assert f"  {service.name} " in helped.stdout and service.proto_service in helped.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "servers", "video", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "--motion-adapter" in helped.stdout


def test_callers_start_after_the_services_they_call_and_get_their_addresses(tmp_path) -> None:
    assert start_order(("agent", "models", "video", "text")) == ["text", "video", "agent", "models"]
    everything = start_order(tuple(BY_NAME))
    assert sorted(everything) == sorted(BY_NAME)
    for service in SERVICES:
        assert all(everything.index(callee) < everything.index(service.name) for callee in service.calls)
    # They stop the other way round, each group at once: a caller's jobs may still need its callees.
    assert stop_waves(["text", "image", "agent", "training"]) == [["agent", "training"], ["text", "image"]]
    waves = stop_waves(list(BY_NAME))
    assert sorted(name for wave in waves for name in wave) == sorted(BY_NAME)
    wave_of = {name: index for index, wave in enumerate(waves) for name in wave}
    for service in SERVICES:
        assert all(wave_of[callee] > wave_of[service.name] for callee in service.calls)
    mesh = Mesh(LaunchOptions(services=("agent", "text", "image"), data_dir=tmp_path))
    mesh.replica_ports = {"text": [50001], "image": [50002, 50003]}
    mesh.server_ports = {"text": 50001, "image": 50002, "image-1": 50003}
    argv = mesh._service_argv("agent")
    assert argv[1:4] == ["-m", "servers", "agent"]
    # Video is declared as called but not started here: no flag for it.
    assert "--text-url=127.0.0.1:50001" in argv and "--image-url=ipv4:127.0.0.1:50002,127.0.0.1:50003" in argv
    assert not any(arg.startswith("--video-url") for arg in argv)
    assert not any(arg.endswith("-url") or "-url=" in arg for arg in mesh._service_argv("text"))


def test_every_service_with_job_ids_has_the_shared_job_rpcs() -> None:
    assert job_services() == tuple(service.name for service in SERVICES)
    for name in job_services():
        rpcs = service_rpcs(name)
        assert {"GetJob", "CancelJob", "WatchJob", "ListJobs"} <= set(rpcs.requests), name
        assert "WatchJob" in rpcs.streams and "GetJob" not in rpcs.streams
        assert rpcs.stub_class.__name__ == BY_NAME[name].proto_service.rpartition(".")[2] + "Stub"
        _rpc, request = rpcs.call("Get", f"{BY_NAME[name].job_prefixes[0]}-0-abc")
        assert request.job_id.endswith("-0-abc")


def test_training_jobs_use_the_training_job_rpcs_and_tasks_the_shared_ones() -> None:
    rpcs = service_rpcs("training")
    for verb in ("Get", "Cancel", "Watch"):
        rpc, request = rpcs.call(verb, "trn-1")
        assert rpc == f"{verb}TrainingJob" and type(request).DESCRIPTOR.name == f"{verb}TrainingJobRequest"
        rpc, request = rpcs.call(verb, "tsk-1")
        assert rpc == f"{verb}Job" and isinstance(request, getattr(training_pb2, f"{verb}JobRequest"))


def _check_client(client) -> None:
    for service in SERVICES:
        sub = client.service(service.name)
        assert getattr(client, service.attr) is sub
        for method in ("get_job", "cancel_job", "watch", "call"):
            assert callable(getattr(sub, method)), (service.name, method)
        assert type(sub._stub).__name__ == service.proto_service.rpartition(".")[2] + "Stub"
    assert type(client.images).__name__.endswith("ImageClient")  # the service's own calls stay
    with pytest.raises(Exception, match="service must be one of"):
        client.service("nope")
    with pytest.raises(Exception, match="rpc must be one of"):
        client.text.call("NoSuchRpc")


def test_the_client_offers_every_declared_service_with_its_job_methods() -> None:
    with GenmeshClient("127.0.0.1:1", api_key="k") as client:  # channels connect lazily: nothing is dialled
        _check_client(client)


async def test_the_async_client_offers_every_declared_service_with_its_job_methods() -> None:
    async with AsyncGenmeshClient("127.0.0.1:1", api_key="k") as client:
        _check_client(client)


def test_declared_extras_and_calls_name_real_things() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (servers_requirement,) = extras["servers"]
    servers_extra = set(servers_requirement.removeprefix("genmesh[").removesuffix("]").split(","))
    assert {"mesh", "web"} <= servers_extra
    for service in SERVICES:
        assert not service.extra or service.extra in extras, f"{service.name}: no extra {service.extra!r}"
        # `make install` installs the servers extra: a service left out of it would not start.
        assert not service.extra or service.extra in servers_extra, f"{service.name}: not in the servers extra"
        assert set(service.calls) <= set(BY_NAME) - {service.name}, service.name
        assert service.deploy.grace_seconds > service.deploy.drain_seconds
