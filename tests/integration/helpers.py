"""Small helpers shared by the gateway tests (imported as ``tests.integration.helpers``; pytest runs
from the repository root)."""

from __future__ import annotations

import io
import json
import secrets

import httpx
from PIL import Image

from servers.mesh.launcher import Mesh
from servers.mesh.processes import wait_until


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


def add_keys(mesh: Mesh, clients: dict[str, str]) -> dict[str, str]:
    """New keys on the session mesh, one per client name; ``clients`` maps each name to what follows
    its key on the keys-file line ("admin", "secret=...", "rps=..." or ""). Returned once the gateway
    accepts every one (it applies the file within seconds, no restart)."""
    keys = {name: "gm_" + secrets.token_urlsafe(24) for name in clients}
    with (mesh.data_dir / "api-keys").open("a", encoding="utf-8") as handle:
        handle.writelines(f"{name}={keys[name]} {options}".rstrip() + "\n" for name, options in clients.items())

    def accepted() -> bool:
        return all(
            httpx.get(f"http://{mesh.url}/v1/text/models", headers={"x-api-key": key}, timeout=10).status_code == 200
            for key in keys.values()
        )

    wait_until(accepted, timeout=30, what="the gateway to apply the new keys")
    return keys
