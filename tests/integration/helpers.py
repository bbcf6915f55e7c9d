"""Small helpers shared by the gateway tests (imported as ``tests.integration.helpers``; pytest runs
from the repository root)."""

from __future__ import annotations

import io
import json

import httpx
from PIL import Image


def sse(gateway_url: str, api_key: str, path: str, body: dict | None, method: str = "POST") -> tuple[int, list[dict]]:
    with (
        httpx.Client(base_url=gateway_url, headers={"x-api-key": api_key}, timeout=120) as http,
        http.stream(method, path, json=body) as response,
    ):
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        return 200, [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def png_bytes(width: int = 96, height: int = 64, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), color=(200, 30, 90) if mode == "RGB" else 128).save(buffer, format="PNG")
    return buffer.getvalue()
