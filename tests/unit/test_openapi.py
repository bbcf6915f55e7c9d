"""The OpenAPI document generated from the protos: valid OpenAPI 3.1, every REST route in it, and JSON
described the way the gateway writes and reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from servers.mesh.openapi import _with_range, openapi_path
from servers.mesh.request_fields import descriptor_files, http_bindings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((ROOT / "servers" / "web" / "openapi.json").read_text())
SCHEMAS = DOCUMENT["components"]["schemas"]


def http_rules() -> list[tuple[str, str, bool]]:
    """(verb, path template, server streaming) of every route the gateway transcodes."""
    bindings = http_bindings(*descriptor_files(ROOT / "deploy" / "envoy" / "genmesh.pb"))
    return [(binding.verb, binding.template, binding.method.server_streaming) for binding in bindings]


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)


def test_every_rest_route_is_in_the_document_and_nothing_else() -> None:
    rules = http_rules()
    assert len(rules) >= 25
    documented = {(verb, path) for path, operations in DOCUMENT["paths"].items() for verb in operations}
    assert documented == {(verb, openapi_path(template)) for verb, template, _ in rules}
    for verb, template, streaming in rules:
        content = DOCUMENT["paths"][openapi_path(template)][verb]["responses"]["200"]["content"]
        assert ("text/event-stream" in content) == streaming, template


def test_json_is_described_as_the_gateway_speaks_it() -> None:
    request = SCHEMAS["genmesh.image.v1.GenerateImageRequest"]
    assert request["additionalProperties"] is False  # the gateway refuses unknown fields
    fields = request["properties"]
    assert "negative_prompt" in fields  # proto names, as the gateway prints them
    assert fields["seed"]["type"] == "string" and fields["seed"]["format"] == "int64"  # 64-bit as strings
    assert "SCHEDULER_EULER" in fields["scheduler"]["enum"]  # enums by name
    assert fields["steps"]["minimum"] == 1 and fields["steps"]["maximum"] == 150  # the range its comment states
    assert fields["prompt"]["minLength"] == 1 and fields["prompt"]["maxLength"] == 10000
    assert fields["init_image_data"]["contentEncoding"] == "base64"
    assert "One of" in fields["init_image_data"]["description"]  # a oneof member says so
    generate = DOCUMENT["paths"]["/v1/images:generate"]["post"]
    assert generate["description"]  # the RPC's comment
    assert generate["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("google.rpc.Status")
    assert DOCUMENT["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"


def test_a_path_field_is_not_in_the_body() -> None:
    cancel = DOCUMENT["paths"]["/v1/images/jobs/{job_id}:cancel"]["post"]
    assert [parameter["name"] for parameter in cancel["parameters"]] == ["job_id"]
    body = cancel["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "job_id" not in SCHEMAS[body]["properties"]


@pytest.mark.parametrize(
    ("schema", "comment", "presence", "expected"),
    [
        ({"type": "integer"}, "Denoising steps, 1..150. Default 25.", True, {"minimum": 1, "maximum": 150}),
        ({"type": "number"}, "Guidance, 0.0..30.0; default 7.5", False, {"minimum": 0.0, "maximum": 30.0}),
        ({"type": "string"}, "What to draw, 1..10000 characters.", False, {"minLength": 1, "maxLength": 10000}),
        ({"type": "string"}, "A version like 1..2 of the spec", False, {}),  # a string range needs "characters"
        ({"type": "integer"}, "No range stated here.", False, {}),
        ({"type": "integer"}, "Layer 1..99.", False, {"anyOf": [{"const": 0}, {"minimum": 1, "maximum": 99}]}),
    ],
)
def test_ranges_come_from_the_comments(schema: dict, comment: str, presence: bool, expected: dict) -> None:
    assert _with_range(schema, comment, presence) == {**schema, **expected}
