"""LoRAs: the files, what a request asks for, and switching them on a loaded model per request.

Files are ``.safetensors`` in the LoRA folder (``<data dir>/models/lora``), in either layout users
download: kohya / AUTOMATIC1111 (``lora_unet_*``, ``lora_te_*`` / ``lora_te1_*`` / ``lora_te2_*`` keys
with ``lora_down`` / ``lora_up`` / ``alpha``) or diffusers / PEFT (``unet.*``, ``text_encoder*.*`` keys
with ``lora_A`` / ``lora_B``). diffusers' ``load_lora_weights`` (PEFT backend) reads both; here the
header alone tells the layout and the family a file fits (:func:`inspect_lora`), so a request for a
LoRA of the wrong family is refused before it is queued. This module imports no torch (diffusers and
safetensors only when a LoRA loads): the agent checks requests with the same rules.

Switching: a loaded model keeps its LoRAs as named PEFT adapters (:class:`LoraAdapters`). A request
activates its set with its weights (``set_adapters``); one without LoRAs disables them, which runs the
base layers alone (the same pixels as a model that never saw a LoRA). Adapters load once (the file
read and injected on first use) and the least recently used are deleted beyond a memory budget; the
base model is never reloaded for a switch.

Requests may also name LoRAs in the prompt, as AUTOMATIC1111 does: ``<lora:name:0.8>`` (weight
optional, 1.0) is taken out of the prompt text (:func:`split_prompt_loras`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from genmesh.errors import InvalidArgument, NotFound, require, shown
from servers.diffusion.families import ModelFamily

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

log = structlog.get_logger(__name__)

FIELD = "loras"
# Limits of every request that takes LoRAs (GenerateImage, GenerateVideo, the agent's stages). This
# module imports no torch, so the agent checks them with the same rules as the services.
MAX_LORAS = 5  # per request, counting <lora:...> in the prompt
MIN_LORA_WEIGHT, MAX_LORA_WEIGHT = -2.0, 2.0
SUFFIX = ".safetensors"
MAX_NAME_CHARS = 200
DEFAULT_BUDGET_BYTES = 1024**3  # adapters kept loaded per model (file sizes), beyond the active set

# AUTOMATIC1111's prompt syntax: <lora:name> or <lora:name:weight>.
_PROMPT_LORA = re.compile(r"<lora:([^:<>]*)(?::([^:<>]*))?((?::[^<>]*)?)>", re.IGNORECASE)


@dataclass(frozen=True)
class LoraRequest:
    """One LoRA a request asks for; ``from_prompt`` when it came from ``<lora:...>`` in the prompt."""

    name: str
    weight: float = 1.0
    from_prompt: bool = False


def split_prompt_loras(prompt: str, field: str = "prompt") -> tuple[str, list[LoraRequest]]:
    """``prompt`` without its ``<lora:name[:weight]>`` tags, and the LoRAs they name (in order).
    A tag with a weight that is not a number, or with more parts, is ``InvalidArgument`` naming ``field``."""
    found: list[LoraRequest] = []

    def take(match: re.Match[str]) -> str:
        name, weight, rest = match.group(1).strip(), match.group(2), match.group(3)
        require(bool(name), field, f"{match.group(0)!r} names no LoRA (write <lora:name:weight>)")
        require(not rest, field, f"{match.group(0)!r}: write <lora:name> or <lora:name:weight>")
        value = 1.0
        if weight is not None:
            try:
                value = float(weight)
            except ValueError:
                raise InvalidArgument(
                    f"{field}: {match.group(0)!r} has weight {weight!r}, not a number", field=field
                ) from None
        found.append(LoraRequest(name, value, from_prompt=True))
        return ""

    text = _PROMPT_LORA.sub(take, prompt)
    if found:  # tags usually sit between commas: leave no doubled separators or edge spaces
        text = re.sub(r"\s*,(\s*,)+", ",", text)
        text = re.sub(r"\s{2,}", " ", text).strip(" ,")
    return text, found


def check_loras(loras: Sequence[LoraRequest], field: str = FIELD) -> None:
    """The one check of a request's LoRA list (count, names, weights, repeats), before anything is
    read; messages name ``<field>[i].name`` / ``<field>[i].weight`` and the allowed range."""
    require(
        len(loras) <= MAX_LORAS,
        field,
        f"at most {MAX_LORAS} LoRAs per request, counting <lora:...> in the prompt (got {len(loras)})",
    )
    seen: set[str] = set()
    for index, lora in enumerate(loras):
        origin = " (from the prompt)" if lora.from_prompt else ""
        name_field, weight_field = f"{field}[{index}].name", f"{field}[{index}].weight"
        require(bool(lora.name.strip()), name_field, "must not be empty")
        require(
            len(lora.name) <= MAX_NAME_CHARS and "/" not in lora.name and "\\" not in lora.name,
            name_field,
            f"must be a LoRA name from ListModels, at most {MAX_NAME_CHARS} characters without slashes{origin}",
        )
        if not MIN_LORA_WEIGHT <= lora.weight <= MAX_LORA_WEIGHT:  # NaN too
            raise InvalidArgument(
                f"{weight_field} must be between {shown(MIN_LORA_WEIGHT)} and {shown(MAX_LORA_WEIGHT)} "
                f"(got {shown(lora.weight)}){origin}",
                field=weight_field,
            )
        require(lora.name not in seen, name_field, f"LoRA {lora.name!r} is given twice{origin}")
        seen.add(lora.name)


def requested_loras(
    prompt: str, explicit: Sequence[LoraRequest], *, prompt_field: str = "prompt", field: str = FIELD
) -> tuple[str, tuple[LoraRequest, ...]]:
    """The prompt without ``<lora:...>`` tags and every LoRA asked for (``explicit`` first, then the
    prompt's), checked (:func:`check_loras`)."""
    text, from_prompt = split_prompt_loras(prompt, prompt_field)
    loras = (*explicit, *from_prompt)
    check_loras(loras, field)
    if from_prompt:
        require(bool(text.strip()), prompt_field, "must not be empty once its <lora:...> tags are taken out")
    return text, loras


# -- files ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraFile:
    """A LoRA file as read from its header (and hashed)."""

    name: str
    path: Path
    family: ModelFamily
    layout: str  # "kohya" or "diffusers"
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class ResolvedLora:
    """A requested LoRA found and checked: what a run applies."""

    file: LoraFile
    weight: float
    field: str  # the request field that named it, for errors found when it loads
    from_prompt: bool = False


_KOHYA = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_DIFFUSERS = ("unet.", "text_encoder.", "text_encoder_2.")
_UNET_ROOTS = ("down_blocks.", "mid_block.", "up_blocks.")  # diffusers' older UNet-only files
_NOT_LORA = (".hada_", ".lokr_", ".oft_blocks", ".lora_mid.")  # LyCORIS variants diffusers cannot apply


def _layout(keys: Sequence[str]) -> str | None:
    if any(marker in key for key in keys for marker in _NOT_LORA):
        return None
    weights = [key for key in keys if not key.endswith(".alpha")]
    if weights and all(key.startswith(_KOHYA) for key in weights):
        return "kohya"
    lora_keys = [key for key in weights if "lora" in key]
    if lora_keys and all(key.startswith(_DIFFUSERS + _UNET_ROOTS) for key in weights):
        return "diffusers"
    return None


def _is_down(key: str) -> bool:
    return any(part in key for part in ("lora_down", "lora_A", "lora.down", "_lora.down"))


def detect_lora_family(shapes: dict[str, tuple[int, ...]], what: str, field: str) -> ModelFamily:
    """The family a LoRA fits, from its keys and shapes: a second text encoder or 2048-wide
    cross-attention is SDXL, 768-wide is SD1.5; other widths (small or custom models) by the UNet's
    block structure (SD1.5 has cross-attention in its first down block, SDXL stacks several
    transformer blocks per attention and has none there)."""
    keys = list(shapes)
    if any(key.startswith(("lora_te2_", "text_encoder_2.")) for key in keys):
        return ModelFamily.SDXL
    widths = {
        shape[-1]
        for key, shape in shapes.items()
        if "attn2" in key and "to_k" in key and _is_down(key) and len(shape) == 2
    }
    if widths == {2048}:
        return ModelFamily.SDXL
    if widths == {768}:
        return ModelFamily.SD15
    if widths == {1024}:
        raise InvalidArgument(f"{field}: {what} is a Stable Diffusion 2.x LoRA, which is not supported", field=field)
    flat = [key.replace(".", "_") for key in keys]
    if any("down_blocks_0_attentions" in key or "input_blocks_1_1_" in key for key in flat):
        return ModelFamily.SD15
    if any("transformer_blocks_1_" in key or "input_blocks_7_" in key for key in flat):
        return ModelFamily.SDXL
    if not any(key.startswith(("lora_unet_", "unet.", *_UNET_ROOTS)) for key in keys):
        return ModelFamily.SD15  # one text encoder only: SD1.5's CLIP-L (SDXL LoRAs name te1 and te2)
    raise InvalidArgument(f"{field}: cannot tell which model family {what} is for", field=field)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_lora(path: Path, field: str = FIELD) -> LoraFile:
    """Read a LoRA file's header (layout, family) and hash it; ``InvalidArgument`` naming ``field``
    for a file that is not a readable LoRA of a supported family."""
    from safetensors import safe_open

    path = Path(path)
    what = f"LoRA {path.stem!r}"
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InvalidArgument(f"{field}: {what} is not a readable .safetensors file ({reason})", field=field) from None
    layout = _layout(list(shapes))
    if layout is None:
        raise InvalidArgument(
            f"{field}: {what} is not a LoRA in the kohya/AUTOMATIC1111 or diffusers/PEFT layout "
            "(LyCORIS LoHa/LoKr files are not supported)",
            field=field,
        )
    family = detect_lora_family(shapes, what, field)
    return LoraFile(path.stem, path, family, layout, path.stat().st_size, _sha256(path))


class LoraCatalog:
    """The LoRA folder, scanned on every call (a file dropped in is usable at once); files are read
    and hashed once per (size, modification time)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._inspected: dict[Path, tuple[tuple[int, int], LoraFile | InvalidArgument]] = {}

    def paths(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            return {}
        return {
            path.stem: path
            for path in sorted(self.folder.iterdir())
            if path.is_file() and path.name.lower().endswith(SUFFIX) and not path.name.startswith(".")
        }

    def inspect(self, path: Path, field: str = FIELD) -> LoraFile:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            cached = self._inspected.get(path)
        if cached is None or cached[0] != stamp:
            try:
                found: LoraFile | InvalidArgument = inspect_lora(path, FIELD)
            except InvalidArgument as exc:
                found = exc
            with self._lock:
                self._inspected[path] = (stamp, found)
            cached = (stamp, found)
        found = cached[1]
        if isinstance(found, InvalidArgument):  # re-raised naming the field of this request
            message = str(found).removeprefix(f"{FIELD}: ")
            raise InvalidArgument(f"{field}: {message}", field=field)
        return found

    def entries(self) -> list[tuple[str, Path, LoraFile | None, str]]:
        """(name, path, file or None, problem) for every file in the folder."""
        listed = []
        for name, path in self.paths().items():
            try:
                listed.append((name, path, self.inspect(path), ""))
            except (InvalidArgument, OSError) as exc:
                listed.append((name, path, None, str(exc).removeprefix(f"{FIELD}: ")))
        return listed

    def resolve(
        self,
        loras: Sequence[LoraRequest],
        family: ModelFamily | str | None,
        *,
        model_name: str = "",
        field: str = FIELD,
    ) -> tuple[ResolvedLora, ...]:
        """Each requested LoRA found, read and checked against the model's ``family`` (None: not
        known yet; checked again when the model is loaded): ``NotFound`` naming ``<field>[i].name``
        for an unknown name, ``InvalidArgument`` for an unreadable file or another family's LoRA."""
        paths = self.paths() if loras else {}
        resolved = []
        for index, lora in enumerate(loras):
            name_field = f"{field}[{index}].name"
            path = paths.get(lora.name)
            if path is None:
                available = ", ".join(paths) or "none"
                raise NotFound(
                    f"{name_field}: unknown LoRA {lora.name!r} (in {self.folder}: {available})", field=name_field
                )
            file = self.inspect(path, name_field)
            resolved.append(ResolvedLora(file, lora.weight, name_field, lora.from_prompt))
        if family is not None:
            check_family(resolved, ModelFamily(family), model_name)
        return tuple(resolved)


def check_family(loras: Sequence[ResolvedLora], family: ModelFamily, model_name: str = "") -> None:
    """``InvalidArgument`` naming the first LoRA made for another model family than ``family``."""
    for lora in loras:
        if lora.file.family is not family:
            model = f"model {model_name!r} ({family.value})" if model_name else f"this {family.value} model"
            raise InvalidArgument(
                f"{lora.field}: LoRA {lora.file.name!r} is for {lora.file.family.value} models; it cannot apply to "
                f"{model}",
                field=lora.field,
            )


# -- adapters on a loaded model ----------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_load_reports() -> Iterator[None]:
    """transformers reports every other adapter's weights as "missing" while one loads into the text
    encoder (a long table per load); real failures (size mismatches) still raise."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def adapter_name(file: LoraFile) -> str:
    """Named by content: the same file under another name is the same adapter (PEFT names cannot hold dots)."""
    return f"lora_{file.sha256[:16]}"


class LoraAdapters:
    """The LoRAs loaded into one model's pipeline, least recently used first."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.loaded: OrderedDict[str, LoraFile] = OrderedDict()
        self.active: tuple[tuple[str, float], ...] = ()
        self.loads = 0  # adapters read and injected so far (a switch between loaded ones adds none)

    def activate(self, pipe: DiffusionPipeline, loras: Sequence[ResolvedLora]) -> None:
        """Make exactly ``loras`` active with their weights: load the missing ones, unload the least
        recently used beyond the budget, then switch. ``InvalidArgument`` naming a LoRA's field when
        it does not fit the model (its adapter is removed again: the model stays usable)."""
        for lora in loras:
            name = adapter_name(lora.file)
            if name not in self.loaded:
                self._load(pipe, lora, name)
            self.loaded.move_to_end(name)
        wanted = tuple((adapter_name(lora.file), float(lora.weight)) for lora in loras)
        self._evict(pipe, keep={name for name, _ in wanted})
        if wanted == self.active:
            return
        if wanted:
            pipe.enable_lora()
            _set_adapters(pipe, wanted)
        elif self.loaded:
            pipe.disable_lora()
        self.active = wanted

    def _load(self, pipe: DiffusionPipeline, lora: ResolvedLora, name: str) -> None:
        from safetensors.torch import load_file

        try:
            state: dict[str, Any] = load_file(str(lora.file.path))
            with _quiet_load_reports():
                pipe.load_lora_weights(state, adapter_name=name)
        except Exception as exc:
            self._discard(pipe, name)
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise InvalidArgument(
                f"{lora.field}: LoRA {lora.file.name!r} does not fit this model ({reason})", field=lora.field
            ) from None
        self.loaded[name] = lora.file
        self.active = ()  # loading a LoRA activates it on its own: the next switch must set the set again
        self.loads += 1
        log.info("lora_loaded", lora=lora.file.name, adapter=name, layout=lora.file.layout, size=lora.file.size_bytes)

    def _evict(self, pipe: DiffusionPipeline, keep: set[str]) -> None:
        total = sum(file.size_bytes for file in self.loaded.values())
        for name in list(self.loaded):
            if total <= self.budget_bytes:
                break
            if name in keep:
                continue
            file = self.loaded.pop(name)
            pipe.delete_adapters(name)
            total -= file.size_bytes
            self.active = ()
            log.info("lora_unloaded", lora=file.name, adapter=name, reason="memory budget")

    @staticmethod
    def _discard(pipe: DiffusionPipeline, name: str) -> None:
        """Remove whatever a failed load left of adapter ``name``."""
        try:
            if name in {adapter for names in pipe.get_list_adapters().values() for adapter in names}:
                pipe.delete_adapters(name)
        except Exception as exc:  # nothing was injected: nothing to remove
            log.debug("lora_discard_skipped", adapter=name, error=str(exc)[:200])


def _set_adapters(pipe: DiffusionPipeline, wanted: Sequence[tuple[str, float]]) -> None:
    """What ``pipe.set_adapters(names, weights)`` does, except that each weight goes into its layer's
    scaling as a tensor filled in place: PEFT keeps Python floats there, which a compiled UNet guards
    on, so every new weight would compile the graph again. This way a weight change never recompiles
    (a new set of active names does, once per set); the arithmetic is the same."""
    import math

    import torch
    from peft.tuners.lora import LoraLayer

    names = [name for name, _ in wanted]
    for component in pipe._lora_loadable_modules:
        model = getattr(pipe, component, None)
        if model is None:
            continue
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            module.set_adapter(names)
            for name, weight in wanted:
                if name not in module.scaling:
                    continue
                rank = module.r[name]
                value = weight * module.lora_alpha[name] / (math.sqrt(rank) if module.use_rslora[name] else rank)
                scaling = module.scaling[name]
                if isinstance(scaling, torch.Tensor):
                    scaling.fill_(value)
                else:
                    module.scaling[name] = torch.tensor(value, device=module.lora_A[name].weight.device)
