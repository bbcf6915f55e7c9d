"""Diffusers folders from the hub: which files of a folder to fetch, how each is verified, and what
the assembled folder is.

A diffusers pipeline folder is ``model_index.json`` plus one folder per component; a MotionAdapter
folder is ``config.json`` plus its weights. Hub repositories hold more than that: single-file
checkpoints at the root, README and images, the same weights again as fp16 variants, ``.bin``,
Flax and ONNX copies, and the safety checker (1.2 GB) that this service never runs. Only what a
loader reads is fetched: the root's index or config, and the configs, tokenizer files and
non-variant ``.safetensors`` weights of each component the index names (a component with pickled
weights only needs ``allow_pickle``); the root's own weights only in a component folder (one with
``config.json`` and no ``model_index.json``, such as a MotionAdapter).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from genmesh.errors import InvalidArgument
from servers.diffusion.detect import MotionVersion, family_from_pipeline_class
from servers.models.download import CHUNK_BYTES
from servers.models.kinds import Detected, Kind
from servers.models.refs import FIELD, RepoFile, refuse

PIPELINE_INDEX = "model_index.json"
COMPONENT_CONFIG = "config.json"
METADATA_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizer vocabularies and merges, sentencepiece
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
NEVER_LOADED = ("safety_checker", "feature_extractor")  # loaders pass None for both
MAX_INDEX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Selected:
    files: tuple[RepoFile, ...]
    skipped: int  # files of the folder left out


def _is_variant(name: str) -> bool:
    """``diffusion_pytorch_model.fp16.safetensors``: a variant copy (the plain name is the default)."""
    return "." in name.rsplit(".", 1)[0]


def _weights(files: list[RepoFile], *, allow_pickle: bool, where: str) -> list[RepoFile]:
    """One folder's weights: its non-variant safetensors, else (allowed) its pickles."""

    def plain(suffixes: tuple[str, ...]) -> list[RepoFile]:
        return [
            item for item in files if item.path.endswith(suffixes) and not _is_variant(PurePosixPath(item.path).name)
        ]

    if safetensors := plain((".safetensors",)):
        return safetensors
    pickles = plain(PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise refuse(
            f"{where}/{PurePosixPath(pickles[0].path).name} is a pickled checkpoint, which can run code when "
            "loaded, and the folder has no .safetensors copy; allow it explicitly (allow_pickle, genmesh pull "
            "--allow-pickle)"
        )
    return pickles


def components(index: dict) -> set[str]:
    """The component folders a pipeline's ``model_index.json`` names (``"unet": ["diffusers",
    "UNet2DConditionModel"]``; ``[null, null]`` is an absent component), less the never-loaded ones."""
    named = {
        name
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and all(value)
    }
    return named - set(NEVER_LOADED)


def select(files: tuple[RepoFile, ...], *, allow_pickle: bool, origin: str, index: dict | None = None) -> Selected:
    """The files a loader reads, from a folder's whole listing and its pipeline's ``index`` (the
    parsed ``model_index.json``, when it has one); ``InvalidArgument`` naming ``ref`` when it is not
    a diffusers folder."""
    by_folder: dict[str, list[RepoFile]] = {}
    for item in files:
        if item.path.startswith("/") or {".", "..", ""} & set(item.path.split("/")):
            raise refuse(f"{origin} lists a file outside the folder ({item.path!r})")
        parent = PurePosixPath(item.path).parent.as_posix()
        by_folder.setdefault("" if parent == "." else parent, []).append(item)
    root = {PurePosixPath(item.path).name: item for item in by_folder.get("", [])}
    if PIPELINE_INDEX in root:
        if index is None:
            raise ValueError("a pipeline folder is selected with its model_index.json")
        chosen, wanted = [root[PIPELINE_INDEX]], components(index)
        if missing := sorted(wanted - set(by_folder)):
            raise refuse(f"{origin}: its {PIPELINE_INDEX} names components it does not hold: {', '.join(missing)}")
        for folder, items in sorted(by_folder.items()):
            if folder in wanted:
                chosen += [item for item in items if item.path.endswith(METADATA_SUFFIXES)]
                chosen += _weights(items, allow_pickle=allow_pickle, where=folder)
    elif COMPONENT_CONFIG in root:
        chosen = [root[COMPONENT_CONFIG]]
        chosen += [item for item in root.values() if item.path.endswith(".json") and item.path != COMPONENT_CONFIG]
        chosen += _weights(list(root.values()), allow_pickle=allow_pickle, where=origin)
    else:
        raise refuse(f"{origin} is not a diffusers folder (no {PIPELINE_INDEX} or {COMPONENT_CONFIG} in it)")
    return Selected(tuple(chosen), len(files) - len(chosen))


def git_blob_oid(path: Path) -> str:
    """A file's git blob id: sha1 over ``blob <size>\\0`` and its bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def git_blob_oid_of(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def manifest_sha256(files: tuple[RepoFile, ...], digests: dict[str, str]) -> str:
    """One digest for a folder: sha256 over its sorted ``<sha256>  <path>`` lines (sha256sum's format)."""
    lines = "".join(f"{digests[item.path]}  {item.path}\n" for item in sorted(files, key=lambda item: item.path))
    return hashlib.sha256(lines.encode()).hexdigest()


def motion_version(config: dict, origin: str) -> str:
    """A MotionAdapter folder's AnimateDiff version, by the rules single files are told apart with
    (v2 has a motion mid block, v1 24 positions, v3 neither); SDXL adapters (3 blocks) are refused."""
    if len(config.get("block_out_channels") or ()) != 4:
        raise refuse(f"{origin} is not an SD1.5 motion adapter (an SDXL one?); this server runs SD1.5 ones")
    if config.get("use_motion_mid_block", True):
        return MotionVersion.V2.value
    return (MotionVersion.V1 if config.get("motion_max_seq_length") == 24 else MotionVersion.V3).value


def detect_folder(folder: Path, origin: str) -> Detected:
    """An assembled folder's kind: a pipeline (SD1.5/SDXL, from its index) is an image model, a
    MotionAdapter config a motion adapter; anything else ``InvalidArgument`` naming ``ref``."""
    try:
        if (folder / PIPELINE_INDEX).is_file():
            class_name = json.loads((folder / PIPELINE_INDEX).read_text()).get("_class_name", "")
            return Detected(Kind.IMAGE, family_from_pipeline_class(class_name, origin, FIELD).value)
        config = json.loads((folder / COMPONENT_CONFIG).read_text())
        class_name = config.get("_class_name", "")
    except (OSError, ValueError, AttributeError) as exc:
        raise refuse(f"{origin}: its {PIPELINE_INDEX} or {COMPONENT_CONFIG} is not readable JSON ({exc})") from None
    if class_name == "MotionAdapter":
        return Detected(Kind.MOTION, motion_version(config, origin))
    raise InvalidArgument(
        f"{FIELD}: {origin} holds a {class_name or 'unknown'} component, not a pipeline or a MotionAdapter",
        field=FIELD,
    )
