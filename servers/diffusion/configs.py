"""Config-only diffusers folders: what ``from_single_file(path, config=FOLDER)`` needs to run offline.

A single-file checkpoint (.safetensors/.ckpt in the original LDM layout) holds weights but no
architecture; diffusers reads the architecture from a diffusers-layout folder of configs
(model_index.json, unet/vae/text_encoder(_2) configs, the scheduler config, the tokenizer(s)).
Without ``config=`` it fetches that folder from the model hub, even with ``local_files_only``.

``configs/sd15`` and ``configs/sdxl`` hold the public architecture configs of
stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 as small JSON files. The tokenizers'
``vocab.json`` + ``merges.txt`` (~1.5 MB, derived from ``configs/clip``'s merge list) are not kept
in the repository: :func:`config_folder` copies the JSON tree into a cache folder and writes them
there on first use. The folder name carries a hash of the shipped files, so an updated config never
reuses a stale cache. Deliberate differences from the public repositories: no safety checker or
feature extractor (a 1.2 GB model this service does not run), and no watermarker for SDXL.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from servers.diffusion.cache import build_once
from servers.diffusion.families import ModelFamily
from servers.diffusion.tokenizer import write_clip_vocab

CONFIGS_DIR = Path(__file__).parent / "configs"


def bundled_config_dir(family: ModelFamily | str) -> Path:
    """The shipped JSON tree of a family (no tokenizer vocabularies: use :func:`config_folder`)."""
    return CONFIGS_DIR / ModelFamily(family).value


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _fill_config_folder(source: Path, dest: Path) -> None:
    shutil.copytree(source, dest, dirs_exist_ok=True)
    for tokenizer_dir in sorted(dest.glob("tokenizer*")):
        write_clip_vocab(tokenizer_dir)


def _inpainting(dest: Path) -> None:
    """The family's config with a 9-channel UNet (4 latent + mask + 4 masked-image channels), as the
    public SD1.5 / SDXL inpainting checkpoints have."""
    unet_config = dest / "unet" / "config.json"
    unet_config.write_text(json.dumps({**json.loads(unet_config.read_text()), "in_channels": 9}, indent=2))


def config_folder(family: ModelFamily | str, cache_dir: Path, *, inpainting: bool = False) -> Path:
    """A complete config-only diffusers folder for ``family`` (``inpainting``: its 9-channel UNet
    variant), built under ``cache_dir`` once."""
    source = bundled_config_dir(family)
    variant = "-inpainting" if inpainting else ""
    dest = Path(cache_dir) / "configs" / f"{ModelFamily(family).value}{variant}-{_tree_digest(source)}"

    def fill(tmp: Path) -> None:
        _fill_config_folder(source, tmp)
        if inpainting:
            _inpainting(tmp)

    return build_once(dest, fill)
