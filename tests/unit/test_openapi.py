"""The OpenAPI document generated from the protos: valid OpenAPI 3.1, every REST route in it, and JSON
described the way the gateway writes and reads it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from openapi_spec_validator import validate

from genmesh.text.v1 import text_pb2
from servers.diffusion.params import IMAGE, VIDEO
from servers.mesh.envoy import WEB_PATH_REGEX
from servers.mesh.openapi import _with_range, openapi_path
from servers.mesh.request_fields import descriptor_files, http_bindings
from servers.web import app, images, text
from servers.web.contract import Operation, web_paths
from servers.web.fields import Body

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


def web_routes() -> set[tuple[str, str]]:
    """(verb, path) of every route the web front door serves under /v1 (OpenAI's, GET /v1/jobs)."""
    return {
        (method.lower(), route.path.replace(":path}", "}"))
        for route in app.ROUTES
        if route.path.startswith("/v1/")
        for method in route.methods - {"HEAD"}
    }


def test_every_rest_route_is_in_the_document_and_nothing_else() -> None:
    rules = http_rules()
    assert len(rules) >= 25
    documented = {(verb, path) for path, operations in DOCUMENT["paths"].items() for verb in operations}
    served = web_routes()
    assert len(served) == 14 and ("get", "/v1/jobs") in served and ("get", "/v1/status") in served
    assert documented == {(verb, openapi_path(template)) for verb, template, _ in rules} | served
    for verb, template, streaming in rules:
        content = DOCUMENT["paths"][openapi_path(template)][verb]["responses"]["200"]["content"]
        assert ("text/event-stream" in content) == streaming, template
        if streaming:  # each event's data is the message as JSON (OpenAPI 3.1's way to say so)
            data = content["text/event-stream"]["schema"]["properties"]["data"]
            assert data["contentMediaType"] == "application/json" and "$ref" in data["contentSchema"]


def test_the_web_routes_documented_are_the_ones_the_gateway_sends_to_the_web_front_door() -> None:
    samples = {"{model}": "gemma-3-270m", "{video_id}": "vid-0-abc"}
    for _, path in web_routes():
        for variable, value in samples.items():
            path = path.replace(variable, value)
        assert re.fullmatch(WEB_PATH_REGEX, path), path


def test_openai_parameters_carry_the_services_own_limits() -> None:
    body = DOCUMENT["paths"]["/v1/images/generations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    fields = body["properties"]
    assert (fields["steps"]["minimum"], fields["steps"]["maximum"]) == (IMAGE["steps"].low, IMAGE["steps"].high)
    assert fields["n"]["maximum"] == IMAGE["num_images"].high and fields["prompt"]["maxLength"] == 10000
    assert fields["response_format"]["enum"] == ["url", "b64_json"] and body["required"] == ["prompt"]
    assert fields["guidance_scale"]["maximum"] == IMAGE["guidance_scale"].high
    edits = DOCUMENT["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert edits["properties"]["image"]["format"] == "binary"
    assert edits["properties"]["strength"]["exclusiveMinimum"] == IMAGE["strength"].low
    videos = DOCUMENT["paths"]["/v1/videos"]["post"]["requestBody"]["content"]
    assert "input_reference" not in videos["application/json"]["schema"]["properties"]  # a file: multipart only
    assert videos["multipart/form-data"]["schema"]["properties"]["fps"]["maximum"] == VIDEO["fps"].high
    chat = DOCUMENT["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(chat["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("openai.Error")
    jobs = DOCUMENT["paths"]["/v1/jobs"]["get"]
    assert {parameter["name"] for parameter in jobs["parameters"]} >= {"service", "state", "page_size"}
    assert jobs["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("google.rpc.Status")


def test_a_handler_reading_a_parameter_unlike_its_spec_fails_loudly() -> None:
    body = Body({"steps": 2}, images.GENERATION_FIELDS)
    assert body.get("steps", "integer") == 2
    with pytest.raises(TypeError, match="steps is read as string"):
        body.get("steps", "string")
    with pytest.raises(TypeError, match="strength is read but is not one of the route's Params"):
        body.get("strength", "number")  # an edit's parameter, not a generation's


def test_a_route_without_an_operation_stops_the_generator() -> None:
    def served(path: str) -> bool:
        return path.startswith("/v1/")

    without_jobs = {endpoint: spec for endpoint, spec in app.OPERATIONS.items() if endpoint is not app.jobs_list}
    with pytest.raises(LookupError, match="jobs_list"):
        web_paths(app.ROUTES, without_jobs, served)
    with pytest.raises(LookupError, match="_no_route"):
        web_paths(app.ROUTES, {**app.OPERATIONS, _no_route: Operation("x")}, served)


def test_openai_answers_match_their_documented_shapes() -> None:
    result = text_pb2.TextResult(text="Hi", model="m", finish_reason=text_pb2.FINISH_REASON_STOP)
    call = text.chat_call(Body({"messages": [{"role": "user", "content": "x"}]}, text.CHAT_FIELDS), {})
    responses = DOCUMENT["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    _valid(responses["application/json"]["schema"], call.completion("txt-1", result))
    event = responses["text/event-stream"]["schema"]["properties"]["data"]["else"]["contentSchema"]
    for chunk in [call.delta("txt-1", None, first=True), call.delta("txt-1", "Hi"), *call.final("txt-1", result)]:
        _valid(event, chunk)


def _valid(schema: dict, instance: object) -> None:
    jsonschema.Draft202012Validator({**schema, "components": DOCUMENT["components"]}).validate(instance)


async def _no_route(request: object) -> None:
    """A handler no route serves."""


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
        ({"type": "number"}, "PSNR in dB; higher is better, typically 15..50.", False, {}),  # describes, limits not
        ({"type": "integer"}, "Layer 1..99.", False, {"anyOf": [{"const": 0}, {"minimum": 1, "maximum": 99}]}),
    ],
)
def test_ranges_come_from_the_comments(schema: dict, comment: str, presence: bool, expected: dict) -> None:
    assert _with_range(schema, comment, presence) == {**schema, **expected}
