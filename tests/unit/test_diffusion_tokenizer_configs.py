"""CLIP tokenizer built offline, and the bundled SD1.5/SDXL config folders (checked on the meta
device: the architectures they describe have the public models' exact parameter counts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servers.diffusion.configs import bundled_config_dir, config_folder
from servers.diffusion.tokenizer import VOCAB_SIZE, clip_vocab_and_merges, load_clip_tokenizer


@pytest.fixture(scope="session")
def diffusion_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "diffusion-cache"


def test_vocabulary_has_clip_size_and_layout() -> None:
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == VOCAB_SIZE == 49408
    assert len(merges) == 48894
    assert vocab["a</w>"] == 320 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_real_clip_token_ids(diffusion_cache: Path) -> None:
    tokenizer = load_clip_tokenizer(diffusion_cache)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("a photo of a cat", padding="max_length", max_length=tokenizer.model_max_length)
    assert len(padded.input_ids) == 77 and padded.input_ids[-1] == 49407
    assert tokenizer.decode(tokenizer("A Photo of a CAT").input_ids, skip_special_tokens=True) == "a photo of a cat"


def test_sdxl_second_tokenizer_pads_with_exclamation(diffusion_cache: Path) -> None:
    tokenizer = load_clip_tokenizer(diffusion_cache, pad_token="!")
    assert tokenizer.pad_token_id == 0
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_config_folder_is_complete_and_cached(diffusion_cache: Path, family: str) -> None:
    folder = config_folder(family, diffusion_cache)
    assert config_folder(family, diffusion_cache) == folder
    index = json.loads((folder / "model_index.json").read_text())
    components = [name for name, value in index.items() if isinstance(value, list) and value[0] is not None]
    for name in components:
        assert (folder / name).is_dir(), name
    for tokenizer_dir in folder.glob("tokenizer*"):
        assert (tokenizer_dir / "vocab.json").stat().st_size > 500_000
        assert (tokenizer_dir / "merges.txt").is_file()
    assert not list(bundled_config_dir(family).rglob("vocab.json")), "vocabularies are generated, not shipped"


# Parameter counts of the public checkpoints (UNet, VAE, CLIP ViT-L text, OpenCLIP bigG text + projection).
PUBLIC_PARAMETER_COUNTS = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_bundled_architectures_match_the_public_models(family: str) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = bundled_config_dir(family)
    builders = {
        "unet": lambda: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(folder / "unet"))),
        "vae": lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae"))),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder / "text_encoder"))),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(str(folder / "text_encoder_2"))
        ),
    }
    with init_empty_weights():  # meta tensors: no memory, no init time
        counts = {
            name: sum(p.numel() for p in builders[name]().parameters()) for name in PUBLIC_PARAMETER_COUNTS[family]
        }
    assert counts == PUBLIC_PARAMETER_COUNTS[family]
