"""schemathesis hooks for the REST fuzz test (loaded with SCHEMATHESIS_HOOKS).

- ``before_call`` keeps work cheap: in every generated body, form and query, a value that is valid
  but expensive (steps, sizes, frames, images, tokens, epochs, pairs) is lowered to a cheap value
  that is still valid; a value out of its range is left alone (its refusal is what is tested). Work
  routes with no such value get the cheap one set, so a request without ``steps`` or ``max_tokens``
  does not run a model's full defaults. The point is the API's handling of input, not the models.
- ``after_call`` appends one line per request sent, ``<METHOD> <path template> <status> <first
  event> <seconds>``, to the file GENMESH_FUZZ_CALLS names, so the test can count requests per operation and
  check that each stream answered an event (or an error) first.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import schemathesis

# name -> the cheap value; a value above it (and within its range) is lowered to it.
CAPS: dict[str, float] = {
    "steps": 2, "width": 64, "height": 64, "num_frames": 2, "num_images": 1, "n": 1, "fps": 8,
    "max_tokens": 2, "max_completion_tokens": 2, "num_epochs": 1, "max_pairs": 2, "batch_size": 2,
    "patch_size": 16, "tile_size": 64, "seconds": 0.25,
}  # fmt: skip
# Where the range starts above the cheap value: dotted path -> its own cap.
PATH_CAPS = {"text.max_tokens": 64}
# Highest valid value per name (what the contract allows): above it, a value is left as sent.
HIGHEST = {"width": 2048, "height": 2048, "steps": 150, "num_frames": 64, "num_images": 10_000, "n": 8, "fps": 60,
           "max_tokens": 32_768, "max_completion_tokens": 32_768, "num_epochs": 10_000, "max_pairs": 1_000_000,
           "batch_size": 256, "patch_size": 1024, "tile_size": 4096, "seconds": 8}  # fmt: skip
# Training jobs the run starts train this layer, which no other test trains or lists (a valid layer
# is moved here, an invalid one left as sent): the models and cancelled jobs they leave stay apart.
LAYER = 99
# What a work route runs when the request leaves it unset (path regex -> dotted field -> cheap value).
DEFAULTS = [
    (r"^/v1/(chat/)?completions$", {"max_tokens": 2}),
    (r"^/v1/text:(chat|generate)$", {"sampling.max_tokens": 2}),
    (r"^/v1/images:generate$", {"steps": 2, "width": 64, "height": 64}),
    (r"^/v1/images/(generations|edits)$", {"steps": 2, "size": "64x64"}),
    (r"^/v1/videos:generate$", {"steps": 2, "width": 64, "height": 64, "num_frames": 2}),
    (r"^/v1/videos$", {"steps": 2, "size": "64x64", "seconds": "0.25"}),
    (r"^/v1/agent/character$", {"text.max_tokens": 64, "image.steps": 2, "image.width": 64, "image.height": 64,
                                "video.steps": 2, "video.num_frames": 2, "video.width": 64, "video.height": 64}),
    (r"^/v1/training/synthetic-data:generate$", {"num_images": 1, "width": 64, "height": 64}),
    (r"^/v1/training/jobs$", {"num_epochs": 1, "max_pairs": 2, "patch_size": 16, "layer": LAYER}),
    # Ids are taken from earlier answers, so a model id is often real: its default evaluates every pair
    # of the datasets earlier tests left (more than the request timeout on a busy CI machine).
    (r"^/v1/training/models/\{model_id\}:evaluate$", {"max_pairs": 2}),
]  # fmt: skip
# Texts a model reads (a long prompt costs seconds of prompt processing on a CPU): name -> the longest
# valid one where that is less than the model takes; longer than 64 characters (and valid) is cut to 64.
TEXTS = {"prompt": 10_000, "negative_prompt": 10_000, "content": None, "input": None, "inputs": None, "text": None,
         "idea": 2000}  # fmt: skip
SHORT_TEXT = 64
LISTS = {"input": 2, "inputs": 2, "messages": 4}  # lists of texts: the first few
_SIZE = re.compile(r"^([0-9]+)x([0-9]+)$")


def cheap(name: str, path: str, value: Any) -> Any:
    """``value`` lowered to its cap when it is valid but above it."""
    if name in TEXTS and isinstance(value, str) and SHORT_TEXT < len(value) <= (TEXTS[name] or len(value)):
        return value[:SHORT_TEXT]
    if name in LISTS and isinstance(value, list):
        value = value[: LISTS[name]]
        return [item[:SHORT_TEXT] if isinstance(item, str) else item for item in value]
    if name == "size" and isinstance(value, str) and (match := _SIZE.match(value)):
        fits = all(64 <= int(side) <= 2048 and int(side) % 8 == 0 for side in match.groups())
        return "64x64" if fits else value
    cap = PATH_CAPS.get(path, CAPS.get(name))
    if cap is None or isinstance(value, bool):
        return value
    number = value
    if isinstance(value, str):  # multipart fields, int64 as strings, seconds as "4"
        try:
            number = float(value)
        except ValueError:
            return value
    if not isinstance(number, (int, float)) or not cap < number <= HIGHEST.get(name, number):
        return value
    lowered = int(cap) if float(cap).is_integer() and not isinstance(number, float) else cap
    return str(lowered) if isinstance(value, str) else lowered


def lowered(data: Any, prefix: str = "") -> Any:
    if isinstance(data, dict):
        return {key: lowered(cheap(key, prefix + key, value), f"{prefix}{key}.") for key, value in data.items()}
    if isinstance(data, list):
        return [lowered(item, prefix) for item in data]
    return data


def with_defaults(body: dict, defaults: dict[str, Any]) -> None:
    for dotted, value in defaults.items():
        *parents, name = dotted.split(".")
        target: Any = body
        for parent in parents:
            target = target.setdefault(parent, {}) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target.setdefault(name, value)


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    if isinstance(case.body, dict):
        body = lowered(case.body)
        for pattern, defaults in DEFAULTS:
            if case.operation.method.upper() == "POST" and re.match(pattern, case.operation.path):
                with_defaults(body, defaults)
        if case.operation.path == "/v1/training/jobs" and _valid_layer(body.get("layer")):
            body["layer"] = LAYER
        case.body = body
    if isinstance(case.query, dict):
        case.query = lowered(case.query)


def _valid_layer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= LAYER


@schemathesis.hook
def after_call(context, case, response) -> None:
    first = "-"
    if response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        first = _first_event(response.content)
    with open(os.environ["GENMESH_FUZZ_CALLS"], "a", encoding="utf-8") as calls:
        calls.write(f"{case.operation.method.upper()} {case.operation.path} {response.status_code} {first} "
                    f"{response.elapsed:.3f}\n")  # fmt: skip


def _first_event(content: bytes) -> str:
    """``event`` (a JSON object), ``error`` (one naming an error) or ``none`` for a stream's first data."""
    for line in content.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            try:
                data = json.loads(line[5:])
            except ValueError:
                return "none"
            return "error" if isinstance(data, dict) and "error" in data and len(data) <= 2 else "event"
    return "none"
