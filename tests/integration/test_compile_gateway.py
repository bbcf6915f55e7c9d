"""An Image server started with --compile (the tiny model, inductor on the CPU) behind the real
gateway: health says SERVING only after the compile and warm-up, and a generation at the warmed-up
size runs through the gateway without compiling anything more.

Its own small mesh (S3, the Image server, Envoy), since the shared one runs eagerly. The server
compiles a model smaller than the built-in one (tests/support/micro_model.py: the built-in model's
compile took ~115 s of a two-core CI run). The compiled kernels go to pytest's cache folder when
there is one, as a deployment keeps its data folder between starts: the first run compiles, later
runs load them from there (the restart path).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from genmesh.client import GenmeshClient
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port
from tests.support.micro_model import save_micro_sd15

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 64
MODEL = "micro-sd15"


@pytest.fixture
def compiled_mesh(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mesh]:
    for name in ("GENMESH_API_KEYS", "GENMESH_API_KEYS_FILE", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    # CI runs with -p no:cacheprovider (no config.cache): then the kernels live for this run only.
    cache = getattr(request.config, "cache", None)
    kernels = cache.mkdir("genmesh-inductor") if cache is not None else tmp_path / "inductor"
    data_dir = tmp_path / "data"
    save_micro_sd15(tmp_path / "build", data_dir / "models" / "image" / MODEL)
    image_args = ["--model", MODEL, "--compile", "--compile-warmup", f"{SIZE}x{SIZE}", "--compile-cache-dir",
                  str(kernels)]  # fmt: skip
    options = LaunchOptions(
        port=free_port(), services=("image",), data_dir=data_dir, service_args={"image": image_args}
    )
    mesh = Mesh(options).start()  # returns once health says SERVING and the gateway routes to the server
    try:
        yield mesh
    finally:
        mesh.stop()


def log_events(mesh: Mesh) -> list[dict]:
    lines = (mesh.logs / "image.log").read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_compiled_image_server_warms_up_before_serving_and_generates(compiled_mesh: Mesh) -> None:
    events = log_events(compiled_mesh)
    names = [event["event"] for event in events]
    assert "compile_failed_running_eager" not in names
    compiled = next(event for event in events if event["event"] == "compiled")
    assert compiled["graphs"] >= 2  # the UNet and the VAE decoder
    assert names.index("compiled") < names.index("server_ready")  # health waited for the warm-up

    with GenmeshClient(compiled_mesh.url, compiled_mesh.api_key) as client:
        result = client.images.generate(
            "a lighthouse", model=MODEL, width=SIZE, height=SIZE, steps=3, seed=3, return_inline=True
        )
    image = Image.open(io.BytesIO(result.images[0].artifact.data))
    assert image.format == "PNG" and image.size == (SIZE, SIZE)
    assert "compiled_at_request" not in [event["event"] for event in log_events(compiled_mesh)]
