"""The REST contract through the gateway: served at /openapi.json without a key, the same document the
repository holds, and the routes it lists answer as it says (a sample of real calls)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

pytestmark = pytest.mark.integration

DOCUMENT = Path(__file__).resolve().parents[2] / "servers" / "web" / "openapi.json"


def test_the_gateway_serves_the_document_without_a_key(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    served = response.json()
    assert served == json.loads(DOCUMENT.read_text())
    validate(served)


def test_documented_routes_answer_as_documented(gateway_url: str, api_key: str) -> None:
    document = json.loads(DOCUMENT.read_text())
    headers = {"x-api-key": api_key}
    models = httpx.get(f"{gateway_url}/v1/images/models", headers=headers, timeout=30)
    assert models.status_code == 200 and "200" in document["paths"]["/v1/images/models"]["get"]["responses"]
    schema = document["components"]["schemas"]["genmesh.image.v1.GenerateImageRequest"]["properties"]["steps"]
    refused = httpx.post(
        f"{gateway_url}/v1/images:generate",
        headers=headers,
        json={"prompt": "x", "steps": schema["maximum"] + 1},
        timeout=30,
    )
    assert refused.status_code == 400 and "steps" in refused.json()["message"]
    missing = httpx.get(f"{gateway_url}/v1/images/jobs/img-0-00000000000000000000000000", headers=headers, timeout=30)
    assert missing.status_code == 404 and "404" in document["paths"]["/v1/images/jobs/{job_id}"]["get"]["responses"]
