"""The real CLIP tokenizer, built offline from the BPE merge list shipped in ``configs/clip/``.

CLIP's vocabulary is fully determined by its merge list: 256 byte symbols, the same 256 with the
end-of-word marker ``</w>``, one token per merge (48,894 of them), then ``<|startoftext|>`` and
``<|endoftext|>``: 49,408 ids. This module writes that as ``vocab.json`` + ``merges.txt`` (the layout
``transformers.CLIPTokenizer.from_pretrained`` reads; transformers 5 ignores vocab files passed to the
constructor, so a folder is the only way in) into a cache folder, once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from genmesh.errors import Unavailable
from servers.diffusion.cache import build_once

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

BPE_VOCAB_PATH = Path(__file__).parent / "configs" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
BPE_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

VOCAB_SIZE = 49408
MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# The merge list holds more lines than CLIP uses; CLIP keeps the first 49152 - 256 - 2 merges.
_NUM_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2 and CLIP use the same one).

    Printable Latin-1 bytes map to themselves and come first, in byte order; the other bytes follow,
    mapped to code points from 256 up. The order matters: it is the order of the first 256 ids.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    table = {byte: chr(byte) for byte in printable}
    table.update({byte: chr(256 + index) for index, byte in enumerate(others)})
    return table


def read_merges(bpe_path: Path = BPE_VOCAB_PATH) -> list[tuple[str, str]]:
    """The merges CLIP uses, in priority order, from the gzipped merge list."""
    data = Path(bpe_path).read_bytes()
    if bpe_path == BPE_VOCAB_PATH and hashlib.sha256(data).hexdigest() != BPE_VOCAB_SHA256:
        raise Unavailable(f"the CLIP vocabulary at {bpe_path} is damaged (sha256 mismatch)")
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # Line 0 is a version header; then one "left right" pair per line.
    merges = [line.split() for line in lines[1 : _NUM_MERGES + 1]]
    return [(pair[0], pair[1]) for pair in merges]


@cache
def clip_vocab_and_merges(bpe_path: Path = BPE_VOCAB_PATH) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's token -> id table (49,408 entries) and its merges."""
    merges = read_merges(bpe_path)
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(symbol + "</w>" for symbol in symbols), *("".join(pair) for pair in merges)]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise Unavailable(f"the CLIP vocabulary has {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, tuple(merges)


def tokenizer_config(pad_token: str = EOS_TOKEN) -> dict[str, object]:
    """``tokenizer_config.json`` as the SD1.5 and SDXL repositories ship it (SDXL's second tokenizer
    pads with ``"!"``, the first and SD1.5's with ``<|endoftext|>``)."""
    return {
        "add_prefix_space": False,
        "bos_token": BOS_TOKEN,
        "clean_up_tokenization_spaces": False,
        "do_lower_case": True,
        "eos_token": EOS_TOKEN,
        "errors": "replace",
        "model_max_length": MAX_LENGTH,
        "pad_token": pad_token,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": EOS_TOKEN,
    }


def write_clip_vocab(folder: Path, *, bpe_path: Path = BPE_VOCAB_PATH) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(bpe_path)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges), encoding="utf-8"
    )
    return folder


def write_clip_tokenizer(folder: Path, *, pad_token: str = EOS_TOKEN, bpe_path: Path = BPE_VOCAB_PATH) -> Path:
    """Write a complete CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) into ``folder``, which may already hold other files."""
    folder = write_clip_vocab(folder, bpe_path=bpe_path)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(pad_token), indent=2) + "\n")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": pad_token, "unk_token": EOS_TOKEN}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return folder


def clip_tokenizer_folder(cache_dir: Path, *, pad_token: str = EOS_TOKEN) -> Path:
    """A cached CLIP tokenizer folder under ``cache_dir`` (built on first use)."""
    name = "clip-tokenizer" if pad_token == EOS_TOKEN else f"clip-tokenizer-pad-{ord(pad_token[0]):x}"
    return build_once(Path(cache_dir) / name, lambda tmp: write_clip_tokenizer(tmp, pad_token=pad_token))


def load_clip_tokenizer(cache_dir: Path, *, pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """A ``transformers.CLIPTokenizer`` with CLIP's real vocabulary, loaded from the cache."""
    from transformers import CLIPTokenizer

    folder = clip_tokenizer_folder(cache_dir, pad_token=pad_token)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_LENGTH, local_files_only=True)
