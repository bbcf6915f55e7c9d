"""What a pulled file is: its format from its first bytes (refusing HTML pages and, unless allowed,
pickles as soon as they arrive), then its kind from its header, with the loaders' own rules
(``servers.diffusion.detect``). Nothing here imports torch, except to read an allowed pickle's
tensor shapes (``weights_only``, as the loaders read it)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from genmesh.errors import InvalidArgument
from servers.diffusion.detect import (
    family_from_shapes,
    is_motion_module,
    motion_version_from_shapes,
    safetensors_shapes,
)
from servers.models.refs import FIELD, refuse

SNIFF_BYTES = 16
GGUF_MAGIC = b"GGUF"
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip format: a pickle inside
HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<!--")


class Format(StrEnum):
    GGUF = "gguf"
    SAFETENSORS = "safetensors"
    PICKLE = "pickle"


class Kind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    MOTION = "motion"


SUFFIXES = {Format.GGUF: ".gguf", Format.SAFETENSORS: ".safetensors", Format.PICKLE: ".ckpt"}


@dataclass(frozen=True)
class Detected:
    kind: Kind
    family: str  # "sd15"/"sdxl" for image, "v1".."v3" for motion, "" for text


def sniff(head: bytes, *, allow_pickle: bool, file_name: str) -> Format:
    """The format from a file's first bytes (at least ``SNIFF_BYTES`` when the file has them)."""
    if head.startswith(GGUF_MAGIC):
        return Format.GGUF
    if len(head) >= 9:
        (length,) = struct.unpack("<Q", head[:8])
        if 2 <= length < 100 * 1024 * 1024 and head[8:9] == b"{":
            return Format.SAFETENSORS
    if head.startswith(ZIP_MAGIC) or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        if not allow_pickle:
            raise refuse(
                f"{file_name} is a pickled checkpoint, which can run code when loaded; pull a .safetensors or "
                "GGUF file, or allow it explicitly (allow_pickle, genmesh pull --allow-pickle)"
            )
        return Format.PICKLE
    lowered = head.lstrip().lower()
    if lowered.startswith(HTML_STARTS) or lowered.startswith(b"<"):
        raise refuse(f"the source sent an HTML page, not a model, for {file_name} (a login or error page?)")
    raise refuse(f"{file_name} is not a GGUF, safetensors or pickled checkpoint file (starts with {head[:8]!r})")


def _shapes(path: Path, form: Format) -> dict[str, tuple[int, ...]]:
    try:
        if form is Format.SAFETENSORS:
            return safetensors_shapes(path)
        from servers.diffusion.sources import read_checkpoint_shapes  # torch, only for an allowed pickle

        return read_checkpoint_shapes(path)
    except InvalidArgument:
        raise
    except Exception as exc:
        raise refuse(f"the file is not a readable checkpoint ({exc})") from None


def detect(path: Path, form: Format, name: str) -> Detected:
    """The kind of a downloaded file: GGUF is text; a checkpoint is a motion module or an SD1.5/SDXL
    image model (``InvalidArgument`` naming ``ref`` for anything else)."""
    if form is Format.GGUF:
        return Detected(Kind.TEXT, "")
    shapes = _shapes(path, form)
    if is_motion_module(shapes):
        return Detected(Kind.MOTION, motion_version_from_shapes(shapes, name, FIELD).value)
    return Detected(Kind.IMAGE, family_from_shapes(shapes, name, FIELD).value)
