"""The gateway's strict JSON check (deploy/envoy/strict_json.lua) in a real Envoy of its own, in front of a
direct response: what it lets through reaches the route untouched, what it refuses gets 400 naming the
field. The mesh's gateway runs the same filter (test_refused_before_queueing.py covers it end to end)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers.mesh.envoy import Envoy
from servers.mesh.launcher import DESCRIPTOR_PATH
from servers.mesh.processes import free_port
from servers.mesh.request_fields import STRICT_JSON_LUA, render_lua

pytestmark = pytest.mark.integration


HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def config(port: int, admin_port: int, lua: str) -> str:
    listener = {
        "name": "strict",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM_TYPE,
                "stat_prefix": "strict",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "passed"}}},
                ]}]},
                "http_filters": [
                    {"name": "envoy.filters.http.lua", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                        "default_source_code": {"inline_string": lua},
                    }},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        }]}],
    }  # fmt: skip
    admin = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    return json.dumps({"admin": admin, "static_resources": {"listeners": [listener]}})


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("strict-json")
    port, admin_port = free_port(), free_port()
    path = folder / "envoy.json"
    path.write_text(config(port, admin_port, render_lua(DESCRIPTOR_PATH, STRICT_JSON_LUA)))
    envoy = Envoy(path, admin_port=admin_port, log_path=folder / "envoy.log", name="strict-json-envoy").start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        envoy.stop()


PASSES = [
    ("/v1/images:generate", {"prompt": "a cat", "width": 64, "steps": "4", "scheduler": "SCHEDULER_EULER"}),
    ("/v1/images:generate", {"prompt": "a", "initImageRef": {"bucket": "b", "key": "k"}, "strength": 0.5}),
    ("/v1/images:generate", {"prompt": "a", "init_image_data": "QUJD" * 5000, "init_image_ref": None}),
    ("/v1/text:chat", {"messages": [{"role": "user", "content": 'hi "there" \\ \u00e9'}], "sampling": {"seed": 1}}),
    ("/v1/text:generate", {"prompt": "x", "response_format": {"type": "TYPE_JSON", "json_schema": {"any": [1, {}]}}}),
    ("/v1/videos:generate", {"prompt": "x", "prompt_schedule": {"0": "a", "8": "b"}, "detach": False}),
    ("/v1/training/jobs", {"layer": 3, "num_epochs": 5, "architecture": "ARCHITECTURE_TINY"}),
    ("/v1/agent/character", {"idea": "x", "stages": ["STAGE_TEXT", 2], "image": {"width": 64}}),
    ("/v1/text/jobs/txt-1:cancel", {}),
    ("/v1/unknown/route", {"not": "checked"}),  # not transcoded: the router's business
]

REFUSED = [
    ("/v1/training/jobs", {"layer": 3, "epochs": 5}, "spec.epochs: no such field (did you mean spec.num_epochs?)"),
    ("/v1/training/jobs", {"layer": 3, "arch": "ARCHITECTURE_TINY"},
     "spec.arch: no such field (did you mean spec.architecture?)"),
    ("/v1/images:generate", {"prompt": "a", "widht": 64}, "widht: no such field (did you mean width?)"),
    ("/v1/images:generate", {"prompt": "a", "qqqqqqqq": 1}, "qqqqqqqq: no such field"),
    ("/v1/images:generate", {"prompt": "a", "detach": "yes"}, 'detach: must be true or false (got "yes")'),
    ("/v1/images:generate", {"prompt": "a", "steps": "many"}, 'steps: must be a number (got "many")'),
    ("/v1/images:generate", {"prompt": "a", "scheduler": "FAST"}, "scheduler: must be one of SCHEDULER_UNSPECIFIED"),
    ("/v1/images:generate", {"prompt": "a", "init_image_data": "QUJD", "initImageRef": {"bucket": "b", "key": "k"}},
     "init_image_data and init_image_ref: set only one of them (they are alternatives)"),
    ("/v1/images:generate", {"prompt": "a", "init_image_ref": {"bucket": "b", "kee": "k"}},
     "init_image_ref.kee: no such field (did you mean init_image_ref.key?)"),
    ("/v1/text:chat", {"messages": [{"role": "user", "text": "hi"}]}, "messages[0].text: no such field"),
    ("/v1/text:chat", {"messages": {"role": "user"}}, "messages: must be a list (got an object)"),
    ("/v1/text:generate", {"prompt": "a", "sampling": 3}, "sampling: must be an object (got 3)"),
    ("/v1/videos:generate", {"prompt": "a", "prompt_schedule": {"0": 5}}, "prompt_schedule[0]: must be a string"),
    ("/v1/agent/character", {"idea": "x", "image": {"size": 512}}, "image.size: no such field"),
    ("/v1/text/jobs/txt-1:cancel", {"reason": "x"}, "reason: no such field"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body"), PASSES)
def test_valid_bodies_pass_untouched(gateway: httpx.Client, path: str, body: dict) -> None:
    response = gateway.post(path, json=body)
    assert (response.status_code, response.text) == (200, "passed")


@pytest.mark.parametrize(("path", "body", "message"), REFUSED)
def test_bodies_the_transcoder_would_change_are_refused_naming_the_field(
    gateway: httpx.Client, path: str, body: dict, message: str
) -> None:
    response = gateway.post(path, json=body)
    assert response.status_code == 400 and response.text.startswith(message), response.text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"prompt": "a",}', "request body: not valid JSON (expected a field name at byte 16)"),
        (b'{"prompt": "a"} x', "request body: not valid JSON (text after the value at byte 17)"),
        (b'["prompt"]', "request body: must be a JSON object (got a list)"),
        (b'{"prompt": "a\x01"}', "request body: not valid JSON (control character in a string at byte 14)"),
        (b"[" * 100 + b"]" * 100, "request body: not valid JSON (nested too deeply"),
    ],
)
def test_bodies_that_are_not_json_objects_are_refused(gateway: httpx.Client, raw: bytes, message: str) -> None:
    response = gateway.post("/v1/images:generate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.text.startswith(message), response.text


def test_grpc_calls_pass(gateway: httpx.Client) -> None:
    grpc_like = gateway.post("/v1/images:generate", content=b"\x00\x00", headers={"content-type": "application/grpc"})
    assert grpc_like.status_code == 200


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("/v1/training/jobs?page_size=5&layer=3&state=JOB_STATE_RUNNING", 200, "passed"),
        ("/v1/text/jobs/txt-1", 200, "passed"),
        ("/v1/training/jobs/trn-1:watch?job_id=trn-1", 200, "passed"),
        ("/v1/training/jobs?pagesize=5", 400, "query parameter pagesize: no such field (did you mean page_size?)"),
        ("/v1/images/jobs/img-1?x=1", 400, "query parameter x: no such field"),
        ("/v1/training/jobs/trn-1/report?plots=1", 400, "query parameter plots: no such field"),
        ("/v1/training/jobs?layer.x=1", 400, "query parameter layer.x: no such field"),
    ],
)
def test_query_parameters_name_fields_of_the_request(
    gateway: httpx.Client, url: str, status: int, message: str
) -> None:
    response = gateway.get(url)
    assert response.status_code == status and response.text.startswith(message), response.text


def test_the_lua_source_holds_the_schema_placeholder_once() -> None:
    assert Path(STRICT_JSON_LUA).read_text().count("__SCHEMA_JSON__") == 1
