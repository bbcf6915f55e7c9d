"""Replicas locally (issue 9): ``genmesh up --replicas`` parsing, and the gateway config for a
service with several replicas (both endpoints, least-request balancing, the RESOURCE_EXHAUSTED
retry on another replica, the forwarding marker dropped from outside requests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.api import annotations_pb2
from grpc_tools import protoc

from genmesh.services import BY_NAME
from servers.mesh.envoy import JOB_RETRY_POLICY, render_envoy_config
from servers.mesh.launcher import MAX_LOCAL_REPLICAS, LaunchOptions, grpc_target, metrics_urls, parse_replicas
from servers.runtime.forwarding import FORWARDED
from servers.web.status import parse_metrics_urls

PROTO_ROOT = Path(__file__).resolve().parents[2] / "protos"
SERVICES = ("text", "image", "video", "training", "agent")
TWO_TEXT = {"text": [("127.0.0.1", 6001), ("127.0.0.1", 6002)], "image": [("127.0.0.1", 6003)]}

# ------------------------------------------------------------------------------------------------
# --replicas


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param("  ", {}, id="blank"),
        pytest.param("text=2", {"text": 2}, id="one"),
        pytest.param("image=2,text=2", {"image": 2, "text": 2}, id="two"),
        pytest.param(" text = 3 , image=1 ", {"text": 3, "image": 1}, id="spaces"),
        pytest.param("text=2,", {"text": 2}, id="trailing-comma"),
        pytest.param("text=1", {"text": 1}, id="one-replica"),
        pytest.param(f"video={MAX_LOCAL_REPLICAS}", {"video": MAX_LOCAL_REPLICAS}, id="max"),
    ],
)
def test_parse_replicas(text: str, expected: dict[str, int]) -> None:
    assert parse_replicas(text, SERVICES) == expected


@pytest.mark.parametrize(
    ("text", "services"),
    [
        pytest.param("audio=2", SERVICES, id="unknown-service"),
        pytest.param("image=2", ("text",), id="service-not-started"),
        pytest.param("text=0", SERVICES, id="zero"),
        pytest.param(f"text={MAX_LOCAL_REPLICAS + 1}", SERVICES, id="too-many"),
        pytest.param("text=-1", SERVICES, id="negative"),
        pytest.param("text=1.5", SERVICES, id="fraction"),
        pytest.param("text=two", SERVICES, id="word"),
        pytest.param("text", SERVICES, id="no-count"),
        pytest.param("text=", SERVICES, id="empty-count"),
        pytest.param("=2", SERVICES, id="no-name"),
        pytest.param("text:2", SERVICES, id="colon"),
        pytest.param("text=2=3", SERVICES, id="two-equals"),
        pytest.param("text=2;image=2", SERVICES, id="semicolon"),
        pytest.param("garbage", SERVICES, id="junk"),
    ],
)
def test_parse_replicas_rejects(text: str, services: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_replicas(text, services)
    message = str(exited.value.code)
    assert message.startswith("--replicas:")
    assert f"1 to {MAX_LOCAL_REPLICAS}" in message
    assert ", ".join(services) in message  # says what may be chosen


def test_launch_options_build_reads_replicas(tmp_path: Path) -> None:
    options = LaunchOptions.build(port=8080, services="text,image", data_dir=tmp_path, replicas="text=2")
    assert options.replicas == {"text": 2}
    assert options.replica_count("text") == 2
    assert options.replica_count("image") == 1  # default
    with pytest.raises(SystemExit, match="--replicas"):
        LaunchOptions.build(port=8080, services="text", data_dir=tmp_path, replicas="image=2")


def test_grpc_target_names_every_replica() -> None:
    assert grpc_target([6001]) == "127.0.0.1:6001"
    assert grpc_target([6001, 6002]) == "ipv4:127.0.0.1:6001,127.0.0.1:6002"


def test_the_web_front_door_reads_every_replicas_metrics() -> None:
    """GET /v1/status sums the replicas' queues: each replica's /metrics port is passed, as the web
    front door's setting parses it."""
    ports = {"text": 7001, "text-1": 7002, "image": 7003, "models": 7004}
    replicas = {"text": [6001, 6002], "image": [6003], "models": [6004]}
    urls = metrics_urls(["text", "image"], ports, replicas)
    assert parse_metrics_urls(urls) == {"text": ["127.0.0.1:7001", "127.0.0.1:7002"], "image": ["127.0.0.1:7003"]}


# ------------------------------------------------------------------------------------------------
# The gateway with two Text replicas


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("genmesh/*/v1/*.proto"))
    google_api = Path(annotations_pb2.__file__).resolve().parents[2]
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    out = tmp_path_factory.mktemp("descriptor") / "genmesh.pb"
    argv = ["protoc", f"-I{PROTO_ROOT}", f"-I{google_api}", f"-I{well_known}", "--include_imports"]
    assert protoc.main([*argv, f"--descriptor_set_out={out}", *files]) == 0
    return out


@pytest.fixture(scope="module")
def config(descriptor: Path) -> dict:
    text = render_envoy_config(
        listen_port=8080,
        admin_port=9901,
        descriptor_path=descriptor,
        api_keys={"local": "secret-key-1"},
        upstreams=TWO_TEXT,
        rate_limit_rps=50,
        rate_limit_burst=100,
    )
    return yaml.safe_load(text)


def clusters(config: dict) -> dict[str, dict]:
    return {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}


def endpoints(cluster: dict) -> list[tuple[str, int]]:
    sockets = [
        entry["endpoint"]["address"]["socket_address"]
        for group in cluster["load_assignment"]["endpoints"]
        for entry in group["lb_endpoints"]
    ]
    return [(socket["address"], socket["port_value"]) for socket in sockets]


def virtual_host(config: dict) -> dict:
    (hcm,) = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    (host,) = hcm["typed_config"]["route_config"]["virtual_hosts"]
    return host


def service_route(config: dict, package: str) -> dict:
    (route,) = [route for route in virtual_host(config)["routes"] if route["match"].get("prefix") == f"/{package}."]
    return route["route"]


def test_both_text_replicas_are_endpoints(config: dict) -> None:
    text = clusters(config)["text"]
    assert endpoints(text) == [("127.0.0.1", 6001), ("127.0.0.1", 6002)]
    assert endpoints(clusters(config)["image"]) == [("127.0.0.1", 6003)]
    # The reflection/health cluster holds every upstream once.
    assert sorted(endpoints(clusters(config)["any"])) == [("127.0.0.1", 6001), ("127.0.0.1", 6002), ("127.0.0.1", 6003)]


def test_service_clusters_balance_by_least_request(config: dict) -> None:
    for name in SERVICES:
        assert clusters(config)[name]["lb_policy"] == "LEAST_REQUEST", name


def test_service_routes_retry_resource_exhausted_on_another_replica(config: dict) -> None:
    for service in SERVICES:
        route = service_route(config, BY_NAME[service].proto_package)
        policy = route["retry_policy"]
        assert policy == JOB_RETRY_POLICY, service
        assert "resource-exhausted" in policy["retry_on"].split(",")
        assert {"connect-failure", "refused-stream"} <= set(policy["retry_on"].split(","))
        assert policy["num_retries"] >= 1
        (predicate,) = policy["retry_host_predicate"]
        assert predicate["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert service_route(config, "genmesh.text.v1")["cluster"] == "text"


def test_gateway_drops_the_forwarding_marker(config: dict) -> None:
    assert FORWARDED == "x-genmesh-forwarded"
    assert FORWARDED in virtual_host(config)["request_headers_to_remove"]
