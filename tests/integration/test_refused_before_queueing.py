"""Requests that cannot run are refused at submit time, through the real gateway: the REST caller gets
400 / 404 with a JSON body naming the field (by the API's own path), never HTTP 200 and a stream that
fails after waiting its turn."""

from __future__ import annotations

import base64
import json
import socket

import httpx
import pytest

from storage.object_store import ObjectStore
from tests.integration.helpers import png_bytes

pytestmark = pytest.mark.integration

INPUTS = "training-data"  # any bucket the callers can write to


@pytest.fixture(scope="module")
def refs(object_store: ObjectStore) -> dict[str, dict[str, str]]:
    object_store.put_bytes(INPUTS, "refused/not-an-image.png", b"%PDF-1.7 not an image", "image/png")
    return {
        "missing": {"bucket": INPUTS, "key": "refused/missing.png"},
        "not_image": {"bucket": INPUTS, "key": "refused/not-an-image.png"},
    }


def post(gateway_url: str, api_key: str, path: str, body: dict) -> httpx.Response:
    with httpx.Client(base_url=gateway_url, headers={"x-api-key": api_key}, timeout=60) as http:
        return http.post(path, json=body)


def one_pixel_png() -> str:
    return base64.b64encode(png_bytes(1, 1)).decode()


CASES = [
    pytest.param(
        "/v1/images:generate",
        {"prompt": "a", "steps": 1, "width": 2048, "height": 2048, "num_images": 8},
        400, "num_images", "33554432 pixels",
        id="image-pixel-budget",
    ),
    pytest.param(
        "/v1/images:generate",
        {"prompt": "a", "steps": 1, "strength": 0.5, "init_image_data": "<1x1>"},
        400, "strength", "strength x steps must be at least 1", id="image-steps-x-strength",
    ),
    pytest.param(
        "/v1/images:generate",
        {"prompt": "a", "init_image_ref": "<missing>"},
        404, "init_image_ref", "init_image_ref: no object", id="image-missing-ref",
    ),
    pytest.param(
        "/v1/images:generate",
        {"prompt": "a", "init_image_ref": "<not_image>"},
        400, "init_image_ref", "init_image_ref", id="image-ref-not-an-image",
    ),
    pytest.param(
        "/v1/images:generate",
        {"prompt": "a", "strength": 0.9, "init_image_data": "<1x1>", "steps": 0},
        400, "steps", "(got 0)", id="image-steps",
    ),
    pytest.param(
        "/v1/videos:generate",
        {"prompt": "a", "steps": 1, "strength": 0.5, "init_image_data": "<1x1>", "num_frames": 8},
        400, "strength", "steps", id="video-steps-x-strength",
    ),
    pytest.param(
        "/v1/text:generate",
        {"prompt": "a", "model": "no-such-model"},
        404, "model", "unknown model 'no-such-model'", id="text-unknown-model",
    ),
    pytest.param(
        "/v1/text:generate",
        {"prompt": "a", "response_format": {"type": "TYPE_JSON", "json_schema": {"type": "string", "enum": []}}},
        400, "response_format.json_schema", "allows no value", id="text-schema",
    ),
    pytest.param(
        "/v1/text:generate",
        {"prompt": "a", "sampling": {"top_p": 1.1}},
        400, "sampling.top_p", "(got 1.1)", id="text-float-as-sent",
    ),
    pytest.param(
        "/v1/training/jobs",
        {"layer": 100},  # the body is the spec
        400, "spec.layer", "spec.layer must be between 1 and 99 (got 100)", id="training-spec-path",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "field", "text"), CASES)
def test_refused_at_once_naming_the_field(gateway_url, api_key, refs, path, body, status, field, text) -> None:
    placeholders = {"<1x1>": one_pixel_png(), "<missing>": refs["missing"], "<not_image>": refs["not_image"]}
    body = {name: placeholders.get(value, value) if isinstance(value, str) else value for name, value in body.items()}
    response = post(gateway_url, api_key, path, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["message"]
    assert message.startswith(field) and text in message, message


def test_enough_steps_for_the_strength_run(gateway_url, api_key) -> None:
    """The steps x strength check refuses only what cannot run: 2 x 0.5 is one step."""
    body = {"prompt": "a", "steps": 2, "strength": 0.5, "init_image_data": one_pixel_png(), "width": 64, "height": 64}
    response = post(gateway_url, api_key, "/v1/images:generate", body)
    assert response.status_code == 200 and '"result"' in response.text, response.text


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("POST", "/v1/training/jobs", {"layer": 3, "epochs": 5, "arch": "ARCHITECTURE_TINY"},
         "spec.epochs: no such field (did you mean spec.num_epochs?)"),
        ("POST", "/v1/images:generate", {"prompt": "a", "detach": "yes"}, 'detach: must be true or false (got "yes")'),
        ("POST", "/v1/images:generate", {"prompt": "a", "init_image_data": "QUJD", "init_image_ref": {"key": "k"}},
         "init_image_data and init_image_ref: set only one of them"),
        ("POST", "/v1/agent/character", {"idea": "x", "video": {"frames": 8}},
         "video.frames: no such field (did you mean video.num_frames?)"),
        ("GET", "/v1/training/jobs?pagesize=2", None,
         "query parameter pagesize: no such field (did you mean page_size?)"),
    ],
)  # fmt: skip
def test_unknown_fields_are_refused_at_the_gateway(gateway_url, api_key, method, path, body, message) -> None:
    with httpx.Client(base_url=gateway_url, headers={"x-api-key": api_key}, timeout=60) as http:
        response = http.request(method, path, json=body)
    assert response.status_code == 400, response.text
    assert response.json() == {"code": 3, "message": message} or response.json()["message"].startswith(message)


def test_a_large_init_image_passes_the_check_and_an_oversized_body_is_413(gateway_url, api_key) -> None:
    big = base64.b64encode(png_bytes(64, 64) + b"\0" * (3 * 1024 * 1024)).decode()  # > 4 MB of JSON
    response = post(gateway_url, api_key, "/v1/images:generate", {"prompt": "a", "init_image_data": big, "steps": 0})
    assert response.status_code == 400 and response.json()["message"].startswith("steps"), response.text
    oversized = {"prompt": "a", "init_image_data": "A" * (65 * 1024 * 1024)}
    response = post(gateway_url, api_key, "/v1/images:generate", oversized)
    assert response.status_code == 413 and response.json()["code"] == 8, response.text


def raw_request(gateway_url: str, head: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request sent as bytes (clients refuse to send what this needs to)."""
    host, port = gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    header_block, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "head",
    [
        "GET /v1/text/jobs/{long} HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nConnection: close\r\n",
        "GET /v1/text/jobs/x HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nx-big: {long}\r\nConnection: close\r\n",
    ],
    ids=["request-line", "header"],
)
def test_a_request_line_or_header_too_large_answers_json(gateway_url, api_key, head: str) -> None:
    status, headers, body = raw_request(gateway_url, head.format(long="x" * 100_000, key=api_key))
    assert status == 431 and headers["content-type"].startswith("application/json"), (status, headers, body[:200])
    assert json.loads(body)["code"] == 8
