"""LoRAs and inpainting end to end through the real gateway, against the shared mesh: tiny LoRA files
(both layouts) dropped into its models folder's lora/ subfolder, listed, applied over REST and gRPC
(image and video), switched without reloading the base model, bad ones refused with the field named;
inpainting over REST (JSON base64) and through the CLI."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from genmesh import errors
from genmesh.client import GenmeshClient
from servers.diffusion.builtin import build_tiny_sd15
from servers.mesh.launcher import Mesh
from tests.integration.helpers import sse
from tests.integration.test_metrics_gateway import scrape, total
from tests.support.lora import sdxl_shaped_state, write, write_pair

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lora_dir(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mesh's LoRA folder (its models folder's lora/), with tiny LoRAs for the built-in tiny model."""
    folder = mesh.data_dir / "models" / "lora"
    pipe = build_tiny_sd15(tmp_path_factory.mktemp("tiny-cache"))  # the served model's exact architecture
    write_pair(pipe, folder, "gw-style", seed=21)
    write_pair(pipe, folder, "gw-other", seed=22)
    write(sdxl_shaped_state(), folder / "gw-xl.safetensors")
    (folder / "gw-broken.safetensors").write_bytes(b"\xff" * 64)
    return folder


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_of(events: list[dict], object_store) -> Image.Image:
    key = events[-1]["result"]["images"][0]["artifact"]["key"]
    return Image.open(io.BytesIO(object_store.get_bytes("outputs", key))).convert("RGB")


BODY = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 3, "seed": 11, "scheduler": "SCHEDULER_EULER"}


def test_loras_are_listed_with_their_family_and_layout(lora_dir: Path, gateway_url: str, api_key: str) -> None:
    for path in ("/v1/images/models", "/v1/videos/models"):
        response = httpx.get(gateway_url + path, headers={"x-api-key": api_key}, timeout=30)
        assert response.status_code == 200
        loras = {m["name"]: m["labels"] for m in response.json()["models"] if m["labels"]["kind"] == "lora"}
        assert loras["gw-style"]["family"] == "sd15" and loras["gw-style"]["layout"] == "diffusers"
        assert loras["gw-style-kohya"]["layout"] == "kohya" and loras["gw-xl"]["family"] == "sdxl"
        assert "not a readable" in loras["gw-broken"]["problem"]


def test_rest_loras_apply_switch_without_reloading_and_record_digests(
    lora_dir: Path, mesh: Mesh, gateway_url: str, api_key: str, object_store
) -> None:
    status, base = sse(gateway_url, api_key, "/v1/images:generate", BODY)
    assert status == 200, base
    loads_before = total(scrape(mesh, "image"), "genmesh_model_load_seconds_count")
    body = {**BODY, "loras": [{"name": "gw-style", "weight": 0.8}]}
    status, styled = sse(gateway_url, api_key, "/v1/images:generate", body)
    assert status == 200, styled
    applied = styled[-1]["result"]["parameters"]["loras"]
    assert applied[0]["name"] == "gw-style" and applied[0]["weight"] == pytest.approx(0.8)
    assert len(applied[0]["sha256"]) == 64
    assert image_of(styled, object_store).tobytes() != image_of(base, object_store).tobytes()
    # The same weights in the kohya layout, named in the prompt as AUTOMATIC1111 does: the same image.
    prompt_body = {**BODY, "prompt": "a lighthouse <lora:gw-style-kohya:0.8>"}
    status, from_prompt = sse(gateway_url, api_key, "/v1/images:generate", prompt_body)
    assert status == 200, from_prompt
    params = from_prompt[-1]["result"]["parameters"]
    assert params["prompt"] == "a lighthouse" and params["loras"][0]["from_prompt"] is True
    assert image_of(from_prompt, object_store).tobytes() == image_of(styled, object_store).tobytes()
    # Switch to another LoRA, then back to none: the base image again, and the base model never reloaded.
    status, other = sse(gateway_url, api_key, "/v1/images:generate", {**BODY, "loras": [{"name": "gw-other"}]})
    assert status == 200 and other[-1]["result"]["parameters"]["loras"][0]["weight"] == 1.0
    status, again = sse(gateway_url, api_key, "/v1/images:generate", BODY)
    assert image_of(again, object_store).tobytes() == image_of(base, object_store).tobytes()
    assert total(scrape(mesh, "image"), "genmesh_model_load_seconds_count") == loads_before
    record = object_store.get_bytes("outputs", styled[-1]["result"]["record"]["key"])
    assert applied[0]["sha256"].encode() in record
    stored = object_store.get_bytes("outputs", styled[-1]["result"]["images"][0]["artifact"]["key"])
    assert b"Lora hashes" in stored  # in the PNG's A1111 parameters too


@pytest.mark.parametrize(
    ("loras", "status", "field", "text"),
    [
        ([{"name": "gw-missing"}], 404, "loras[0].name", "unknown LoRA 'gw-missing'"),
        ([{"name": "gw-style"}, {"name": "gw-xl"}], 400, "loras[1].name", "is for sdxl models"),
        ([{"name": "gw-broken"}], 400, "loras[0].name", "not a readable .safetensors file"),
        ([{"name": "gw-style", "weight": 3}], 400, "loras[0].weight", "must be between -2 and 2 (got 3)"),
        ([{"name": f"gw-{i}"} for i in range(6)], 400, "loras", "at most 5 LoRAs"),
    ],
)
def test_bad_loras_are_refused_before_queueing_naming_the_field(
    lora_dir: Path, gateway_url: str, api_key: str, loras, status: int, field: str, text: str
) -> None:
    code, events = sse(gateway_url, api_key, "/v1/images:generate", {**BODY, "loras": loras})
    assert code == status, events
    assert events[0]["message"].startswith(f"{field}") and text in events[0]["message"]
    assert sse(gateway_url, api_key, "/v1/images:generate", BODY)[0] == 200  # the server keeps serving


def test_grpc_video_applies_a_lora_to_the_base_unet(lora_dir: Path, client: GenmeshClient) -> None:
    options = {"width": 64, "height": 64, "num_frames": 4, "steps": 2, "seed": 5, "return_inline": True}
    base = client.videos.generate("waves", **options)
    styled = client.videos.generate("waves", loras={"gw-style": 1.0}, **options)
    assert styled.parameters.loras[0].name == "gw-style" and styled.parameters.loras[0].sha256
    assert styled.poster.data != base.poster.data
    with pytest.raises(errors.InvalidArgument, match=r"loras\[0\]\.name: LoRA 'gw-xl' is for sdxl models"):
        client.videos.generate("waves", loras=["gw-xl"], **options)


def init_and_mask() -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(5)
    init = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), "RGB")
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (48, 0, 96, 64))  # re-draw the right half
    return init, mask


def test_rest_inpainting_keeps_the_unmasked_pixels(gateway_url: str, api_key: str, object_store) -> None:
    init, mask = init_and_mask()
    body = {
        "prompt": "a red door",
        "steps": 4,
        "seed": 3,
        "init_image_data": base64.b64encode(png(init)).decode(),
        "mask_image_data": base64.b64encode(png(mask)).decode(),
    }
    status, events = sse(gateway_url, api_key, "/v1/images:generate", body)
    assert status == 200, events
    params = events[-1]["result"]["parameters"]
    assert params["inpaint_mode"] == "INPAINT_MODE_LATENT_BLEND" and params["strength"] == 1.0
    assert params["mask_image"]["key"].endswith("/mask.png")
    result = np.asarray(image_of(events, object_store), dtype=np.int16)
    original = np.asarray(init, dtype=np.int16)
    assert np.abs(result[:, :48] - original[:, :48]).max() <= 2
    assert np.abs(result[:, 48:] - original[:, 48:]).mean() > 20
    wrong = {**body, "mask_image_data": base64.b64encode(png(mask.resize((64, 64)))).decode()}
    status, refused = sse(gateway_url, api_key, "/v1/images:generate", wrong)
    assert status == 400 and refused[0]["message"].startswith("mask_image_data is 64x64; it must be")
    status, refused = sse(
        gateway_url, api_key, "/v1/images:generate", {**BODY, "mask_image_data": body["mask_image_data"]}
    )
    assert status == 400 and refused[0]["message"].startswith("mask_image_data needs an init image")


def test_cli_inpaints_with_init_image_and_mask(mesh: Mesh, tmp_path: Path) -> None:
    init, mask = init_and_mask()
    (tmp_path / "a.png").write_bytes(png(init))
    (tmp_path / "mask.png").write_bytes(png(mask))
    env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
    cli = str(Path(sys.executable).parent / "genmesh")
    paths = {name: str(tmp_path / name) for name in ("a.png", "mask.png", "out.png")}
    command = [cli, "image", "a red door", "--init-image", paths["a.png"], "--mask", paths["mask.png"],
               "--steps", "3", "--seed", "1", "-o", paths["out.png"]]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"), dtype=np.int16)
    assert np.abs(out[:, :48] - np.asarray(init, dtype=np.int16)[:, :48]).max() <= 2
