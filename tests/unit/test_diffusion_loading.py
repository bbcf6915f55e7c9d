"""Loading: sources, family detection, offline guarantee (no socket is ever opened), derived img2img
pipelines sharing the loaded weights, memory modes on the CPU."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from genmesh.errors import InvalidArgument, NotFound
from servers.compute.devices import configure_threads
from servers.diffusion.families import Task
from servers.diffusion.loading import load_model
from servers.diffusion.memory import MemoryMode
from servers.diffusion.sources import ModelSource, SourceKind, detect_folder_family, detect_single_file_family
from tests.support.single_file import save_single_file, write_config_folder


@pytest.fixture(scope="session")
def diffusion_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(int(os.environ.get("GENMESH_THREADS", "2")))
    return tmp_path_factory.getbasetemp() / "diffusion-cache"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to resolve or connect anywhere fails loudly and is recorded."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access attempted during a test that forbids it")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_parse_sources(tmp_path: Path) -> None:
    assert ModelSource.parse("builtin:tiny-sd15") == ModelSource(SourceKind.BUILTIN, "tiny-sd15", family="sd15")
    assert ModelSource.parse("/m/x.safetensors").kind is SourceKind.SINGLE_FILE
    assert ModelSource.parse("/m/x.CKPT", family="sdxl").family == "sdxl"
    assert ModelSource.parse(str(tmp_path)).kind is SourceKind.DIFFUSERS
    assert str(ModelSource.parse("builtin:tiny-sd15")) == "builtin:tiny-sd15"


def test_loading_never_touches_the_network(no_network: list[str], diffusion_cache: Path, tmp_path: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    model = load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=diffusion_cache, device="cpu")
    model.pipeline(Task.IMG2IMG)
    checkpoint = save_single_file(model.pipeline(), tmp_path / "tiny.safetensors")
    config_dir = write_config_folder(model.pipeline(), tmp_path / "tiny-config")
    reloaded = load_model(
        ModelSource.parse(str(checkpoint), config_dir=config_dir), cache_dir=diffusion_cache, device="cpu"
    )
    assert reloaded.family == "sd15"
    # Without config_dir the config is derived from the weights' shapes; the built-in model's 8 norm
    # groups do not fit SD1.5's 32, and that must be found out locally (never on the hub).
    with pytest.raises(InvalidArgument, match="VAE channels of"):
        load_model(ModelSource.parse(str(checkpoint)), cache_dir=diffusion_cache, device="cpu")
    assert no_network == []


def test_img2img_shares_the_loaded_weights(diffusion_cache: Path) -> None:
    model = load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=diffusion_cache, device="cpu")
    txt2img, img2img = model.pipeline(Task.TXT2IMG), model.pipeline(Task.IMG2IMG)
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert img2img.unet is txt2img.unet and img2img.vae is txt2img.vae and img2img.text_encoder is txt2img.text_encoder
    assert model.pipeline("img2img") is img2img
    assert txt2img.unet.dtype == torch.float32
    assert model.family == "sd15" and model.memory_mode is MemoryMode.FULL and model.default_scheduler == "pndm"


def test_lowvram_on_cpu_still_generates(diffusion_cache: Path) -> None:
    from servers.diffusion.generate import GenerationParams, generate

    model = load_model(
        ModelSource.parse("builtin:tiny-sd15"), cache_dir=diffusion_cache, device="cpu", memory_mode="lowvram"
    )
    assert model.memory_mode is MemoryMode.LOW_VRAM
    assert model.pipeline().vae.use_slicing and model.pipeline().vae.use_tiling
    result = generate(model, GenerationParams("a cat", width=64, height=64, steps=2, seed=1, num_images=2))
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]


def test_missing_paths_and_names_are_not_found(diffusion_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_model(ModelSource.parse(str(tmp_path / "nope")), cache_dir=diffusion_cache, device="cpu")
    with pytest.raises(NotFound):
        load_model(ModelSource.parse(str(tmp_path / "nope.safetensors")), cache_dir=diffusion_cache, device="cpu")
    with pytest.raises(NotFound, match="tiny-sd15"):
        load_model(ModelSource.parse("builtin:huge"), cache_dir=diffusion_cache, device="cpu")


def _checkpoint(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path))
    return path


def test_family_detection_from_keys_and_shapes(tmp_path: Path) -> None:
    sd15 = _checkpoint(
        tmp_path / "a.safetensors",
        {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 8)},
    )
    sdxl = _checkpoint(tmp_path / "b.safetensors", {"conditioner.embedders.1.model.positional_embedding": (77, 8)})
    unet_only_xl = _checkpoint(
        tmp_path / "c.safetensors",
        {"model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (4, 2048)},
    )
    sd2 = _checkpoint(tmp_path / "d.safetensors", {"cond_stage_model.model.token_embedding.weight": (4, 8)})
    inpaint = _checkpoint(tmp_path / "e.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": (8, 9, 3, 3)})
    assert detect_single_file_family(sd15) == "sd15"
    assert detect_single_file_family(sdxl) == "sdxl"
    assert detect_single_file_family(unet_only_xl) == "sdxl"
    for bad in (sd2, inpaint):
        with pytest.raises(InvalidArgument) as error:
            detect_single_file_family(bad)
        assert error.value.field == "model"
    garbage = tmp_path / "f.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidArgument):
        detect_single_file_family(garbage)


def test_ckpt_files_are_read_without_pickle_code(tmp_path: Path) -> None:
    path = tmp_path / "old.ckpt"
    key = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
    torch.save({"state_dict": {key: torch.zeros(77, 8)}}, str(path))
    assert detect_single_file_family(path) == "sd15"
    legacy = tmp_path / "legacy.ckpt"
    torch.save({key: torch.zeros(77, 8)}, str(legacy), _use_new_zipfile_serialization=False)
    assert detect_single_file_family(legacy) == "sd15"
    hostile = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {key: torch.zeros(1)}, "payload": print}, str(hostile))  # a pickled callable
    with pytest.raises(InvalidArgument):
        detect_single_file_family(hostile)


def test_folder_family_detection(tmp_path: Path, diffusion_cache: Path) -> None:
    from servers.diffusion.configs import config_folder

    assert detect_folder_family(config_folder("sdxl", diffusion_cache)) == "sdxl"
    assert detect_folder_family(config_folder("sd15", diffusion_cache)) == "sd15"
    with pytest.raises(InvalidArgument):
        detect_folder_family(tmp_path)


GUARDED_LOAD = """
import socket, sys
from pathlib import Path

def refuse(*args, **kwargs):
    raise SystemExit("network access attempted: " + repr(args[:2]))

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from tests.support.single_file import write_config_folder
from servers.diffusion.loading import load_model
from servers.diffusion.sources import ModelSource
from tests.support.single_file import save_single_file

cache, work = Path(sys.argv[1]), Path(sys.argv[2])
model = load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=cache, device="cpu")
checkpoint = save_single_file(model.pipeline(), work / "tiny.safetensors")
config_dir = write_config_folder(model.pipeline(), work / "tiny-config")
load_model(ModelSource.parse(str(checkpoint), config_dir=config_dir), cache_dir=cache, device="cpu")
print("loaded offline")
# The engine stays free of the RPC and storage layers.
roots = {name.split(".")[0] for name in sys.modules}
protobuf = {name for name in sys.modules if name.startswith("google.protobuf")}
print("forbidden:", sorted(roots & {"grpc", "storage", "minio"} | protobuf))
"""


@pytest.mark.slow
def test_loading_is_offline_even_without_hf_hub_offline(tmp_path: Path) -> None:
    """In a fresh process whose environment does not set HF_HUB_OFFLINE, with every socket call
    refused: the built-in model and a single-file checkpoint still load (and neither grpc,
    protobuf nor the storage layer gets imported)."""
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty hub cache: nothing to fall back on
    completed = subprocess.run(
        [sys.executable, "-c", GUARDED_LOAD, str(tmp_path / "cache"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "loaded offline" in completed.stdout
    assert "forbidden: []" in completed.stdout
