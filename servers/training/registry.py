"""Registered (trained) models in the ``models`` bucket, one folder per layer.

Layout of one model, id ``layer_<n>-<YYYYMMDD_HHMMSS>`` (UTC; only ``[a-z0-9_-]``)::

    models/layer_<n>/restormer_layer<n>_<YYYYMMDD_HHMMSS>.pt     the weights
    models/layer_<n>/restormer_layer<n>_<YYYYMMDD_HHMMSS>.json   the metadata sidecar
    models/layer_<n>/.claims/restormer_layer<n>_<...>/<token>    an empty object reserving the id

Two models registered in the same second get distinct ids: the second one is
``layer_<n>-<YYYYMMDD_HHMMSS>-2`` (files ``restormer_layer<n>_<YYYYMMDD_HHMMSS>-2.*``), then ``-3``...
An id is reserved before anything is uploaded: inside one process under a lock, and across
processes sharing the store by a claim object: a registrant writes
``.claims/<stem>/<random token>`` and lists that folder; it owns the id only if its claim is the
only one there (S3 lists are strongly consistent after writes), otherwise it removes its claim and
tries the next suffix. So two registrations can never write the same keys.

Each upload is whole (see ``storage.object_store``) and the weights go up before the metadata, so a
model counts as registered (listed, found, loadable) only once its metadata exists; a registration
that died halfway leaves weights nobody lists, and its id is never handed out again.

Versions (1, 2, ...) and deltas against the previous version of the same layer are computed when
reading, from the registered models in id order (oldest first), so they stay consistent if a model
is deleted by hand.

Why this module is long: ids, keys, the sidecar format, reading (versions, deltas) and the
cross-process reservation are one on-disk contract that has to change together; pagination is the
API's (``servers.training.api.convert.paginate``), the metric types ``servers.training.types``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from genmesh.errors import Internal, InvalidArgument, NotFound
from servers.training.reports.inputs import PreviousModel
from servers.training.types import Quality
from storage.buckets import MODELS
from storage.keys import model_prefix
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

FORMAT = "genmesh.training.registered-model/1"
MAX_LAYER = 99
MAX_SUFFIX = 9999
CLAIMS_FOLDER = ".claims"
WEIGHTS_CONTENT_TYPE = "application/octet-stream"
_RESERVE_ATTEMPTS = 50

_STAMP = r"[0-9]{8}_[0-9]{6}"
_SUFFIX = r"[2-9]|[1-9][0-9]{1,3}"
MODEL_ID_RE = re.compile(rf"layer_([1-9][0-9]?)-({_STAMP})(?:-({_SUFFIX}))?")
_FILE_RE = re.compile(rf"restormer_layer([1-9][0-9]?)_({_STAMP})(?:-({_SUFFIX}))?\.(pt|json)")
_LAYER_FOLDER_RE = re.compile(r"layer_([1-9][0-9]?)/")
# Filled in by the registry; the caller's metadata cannot override them.
RESERVED_KEYS = ("format", "model_id", "layer", "created_at", "bucket", "key", "size_bytes", "sha256")

_reserve_lock = threading.Lock()


# -- ids and keys ----------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ModelRef:
    """A parsed model id. Orders by time, then suffix (the registration order within a layer)."""

    stamp: str  # YYYYMMDD_HHMMSS, UTC
    suffix: int  # 1 when the id has none
    layer: int

    @property
    def model_id(self) -> str:
        return f"layer_{self.layer}-{self.stamp}" + (f"-{self.suffix}" if self.suffix > 1 else "")

    @property
    def stem(self) -> str:
        return f"restormer_layer{self.layer}_{self.stamp}" + (f"-{self.suffix}" if self.suffix > 1 else "")

    @property
    def weights_key(self) -> str:
        return f"{model_prefix(self.layer)}{self.stem}.pt"

    @property
    def metadata_key(self) -> str:
        return f"{model_prefix(self.layer)}{self.stem}.json"

    @property
    def claims_prefix(self) -> str:
        return f"{model_prefix(self.layer)}{CLAIMS_FOLDER}/{self.stem}/"

    @property
    def time(self) -> datetime:
        return datetime.strptime(self.stamp, "%Y%m%d_%H%M%S").replace(tzinfo=UTC)


def parse_model_id(model_id: str, field: str = "model_id") -> ModelRef:
    """``layer_<n>-<YYYYMMDD_HHMMSS>[-<k>]`` -> ModelRef; InvalidArgument naming ``field`` otherwise."""
    if not isinstance(model_id, str) or not model_id:
        raise InvalidArgument(f"{field} must be a non-empty model id like 'layer_2-20261122_143518'", field=field)
    match = MODEL_ID_RE.fullmatch(model_id)
    if match is None:
        raise InvalidArgument(
            f"{field} {model_id!r} is not a model id: expected 'layer_<1..99>-<YYYYMMDD_HHMMSS>' "
            "(e.g. 'layer_2-20261122_143518', optionally followed by '-<n>')",
            field=field,
        )
    ref = ModelRef(match.group(2), int(match.group(3) or 1), int(match.group(1)))
    try:
        ref.time  # noqa: B018 - validates the date and time
    except ValueError:
        raise InvalidArgument(f"{field} {model_id!r} has an invalid date or time", field=field) from None
    return ref


def model_keys(model_id: str) -> tuple[str, str]:
    """(weights key, metadata key) in the ``models`` bucket for a model id."""
    ref = parse_model_id(model_id)
    return ref.weights_key, ref.metadata_key


def _ref_from_file(name: str) -> tuple[ModelRef, str] | None:
    match = _FILE_RE.fullmatch(name)
    if match is None:
        return None
    return ModelRef(match.group(2), int(match.group(3) or 1), int(match.group(1))), match.group(4)


def _check_layer(layer: Any, field: str = "layer") -> int:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= MAX_LAYER:
        raise InvalidArgument(f"{field} must be an integer between 1 and {MAX_LAYER} (got {layer!r})", field=field)
    return layer


# -- the model record ------------------------------------------------------------------------------


def _quality(value: Any) -> Quality | None:
    if not isinstance(value, Mapping):
        return None
    try:
        return Quality(float(value["psnr"]), float(value["ssim"]), float(value["accuracy"]))
    except (KeyError, TypeError, ValueError):
        return None


def _float_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class RegisteredModelInfo:
    """One registered model (``RegisteredModel``). ``metadata`` is the whole sidecar."""

    model_id: str
    layer: int
    version: int
    created_at: datetime
    bucket: str
    key: str
    metadata_key: str
    size_bytes: int
    sha256: str
    job_id: str = ""
    architecture: str = ""
    parameter_count: int = 0
    dataset_prefix: str = ""
    best_epoch: int = 0
    metrics: Quality | None = None
    baseline: Quality | None = None
    validation_loss: float | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    previous_model_id: str = ""
    delta_vs_previous: Quality | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ref(self) -> ModelRef:
        return parse_model_id(self.model_id)

    def as_previous(self) -> PreviousModel:
        """This model as the report's "previous model of the layer"."""
        return PreviousModel(
            model_id=self.model_id,
            metrics=self.metrics or Quality(math.nan, math.nan, math.nan),
            validation_loss=self.validation_loss,
            job_id=self.job_id,
            key=f"{self.bucket}/{self.key}",
            created=self.created_at,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (metadata left out)."""
        return {
            "model_id": self.model_id,
            "layer": self.layer,
            "version": self.version,
            "created_at": self.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "bucket": self.bucket,
            "key": self.key,
            "metadata_key": self.metadata_key,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "job_id": self.job_id,
            "architecture": self.architecture,
            "parameter_count": self.parameter_count,
            "dataset_prefix": self.dataset_prefix,
            "best_epoch": self.best_epoch,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "validation_loss": self.validation_loss,
            "spec": self.spec,
            "previous_model_id": self.previous_model_id,
            "delta_vs_previous": self.delta_vs_previous.to_dict() if self.delta_vs_previous else None,
        }


def _info_from_sidecar(ref: ModelRef, sidecar: Mapping[str, Any]) -> RegisteredModelInfo:
    created = ref.time
    text = sidecar.get("created_at")
    if isinstance(text, str):
        try:
            parsed = datetime.fromisoformat(text)
            created = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except ValueError:
            pass
    spec = sidecar.get("spec")
    if not isinstance(spec, Mapping):
        spec = sidecar.get("config") if isinstance(sidecar.get("config"), Mapping) else {}

    def integer(name: str) -> int:
        try:
            return int(sidecar.get(name) or 0)
        except (TypeError, ValueError):
            return 0

    return RegisteredModelInfo(
        model_id=ref.model_id,
        layer=ref.layer,
        version=0,
        created_at=created,
        bucket=MODELS,
        key=ref.weights_key,
        metadata_key=ref.metadata_key,
        size_bytes=integer("size_bytes"),
        sha256=str(sidecar.get("sha256") or ""),
        job_id=str(sidecar.get("job_id") or sidecar.get("parent_job_id") or ""),
        architecture=str(sidecar.get("architecture") or ""),
        parameter_count=integer("parameter_count"),
        dataset_prefix=str(sidecar.get("dataset_prefix") or ""),
        best_epoch=integer("best_epoch"),
        metrics=_quality(sidecar.get("metrics")),
        baseline=_quality(sidecar.get("baseline")),
        validation_loss=_float_or_none(sidecar.get("validation_loss")),
        spec=dict(spec),
        metadata=dict(sidecar),
    )


# -- reading ---------------------------------------------------------------------------------------


def _complete_refs(store: ObjectStore, layer: int) -> list[ModelRef]:
    """Models of one layer whose weights and metadata both exist, oldest first (one LIST call)."""
    seen: dict[ModelRef, set[str]] = {}
    for entry in store.list(MODELS, model_prefix(layer), recursive=False):
        if entry.is_prefix:
            continue
        parsed = _ref_from_file(entry.key.rsplit("/", 1)[-1])
        if parsed is None or parsed[0].layer != layer:
            continue
        seen.setdefault(parsed[0], set()).add(parsed[1])
    return sorted(ref for ref, kinds in seen.items() if kinds == {"pt", "json"})


def _read_sidecar(store: ObjectStore, ref: ModelRef) -> dict[str, Any] | None:
    try:
        data = json.loads(store.get_bytes(MODELS, ref.metadata_key))
    except NotFound:
        return None  # deleted since the listing
    except ValueError as exc:
        log.warning("model_metadata_unreadable", key=ref.metadata_key, error=str(exc))
        return None
    if not isinstance(data, dict):
        log.warning("model_metadata_unreadable", key=ref.metadata_key, error="not a JSON object")
        return None
    return data


def _layer_models(store: ObjectStore, layer: int) -> list[RegisteredModelInfo]:
    """Every registered model of one layer, oldest first, with versions and deltas filled in."""
    models: list[RegisteredModelInfo] = []
    for ref in _complete_refs(store, layer):
        sidecar = _read_sidecar(store, ref)
        if sidecar is None:
            continue
        info = _info_from_sidecar(ref, sidecar)
        previous = models[-1] if models else None
        delta = (
            info.metrics.minus(previous.metrics)
            if previous is not None and info.metrics is not None and previous.metrics is not None
            else None
        )
        models.append(
            replace(
                info,
                version=len(models) + 1,
                previous_model_id=previous.model_id if previous else "",
                delta_vs_previous=delta,
            )
        )
    return models


def _layers_present(store: ObjectStore) -> list[int]:
    layers = []
    for entry in store.list(MODELS, "", recursive=False):
        match = _LAYER_FOLDER_RE.fullmatch(entry.key)
        if entry.is_prefix and match:
            layers.append(int(match.group(1)))
    return sorted(layers)


def list_models(store: ObjectStore, layer: int | None = None) -> list[RegisteredModelInfo]:
    """Registered models, newest first; only ``layer``'s when given (None or 0: every layer).
    InvalidArgument (field "layer") for a layer outside 0..99."""
    every = layer is None or (type(layer) is int and layer == 0)
    layers = _layers_present(store) if every else [_check_layer(layer)]
    models = [info for n in layers for info in _layer_models(store, n)]
    return sorted(models, key=lambda info: info.ref, reverse=True)


def get_model(store: ObjectStore, model_id: str) -> RegisteredModelInfo:
    """One registered model. InvalidArgument (field "model_id") for a malformed id; NotFound when
    no model with that id is registered (or its metadata is missing)."""
    ref = parse_model_id(model_id)
    for info in _layer_models(store, ref.layer):
        if info.model_id == ref.model_id:
            return info
    raise NotFound(f"model {model_id!r} not found")


def previous_model(store: ObjectStore, layer: int, before_id: str | None = None) -> RegisteredModelInfo | None:
    """The newest registered model of ``layer`` older than ``before_id`` (which need not exist);
    with ``before_id`` None, the newest of the layer. None if there is none."""
    _check_layer(layer)
    models = _layer_models(store, layer)
    if before_id is None:
        return models[-1] if models else None
    before = parse_model_id(before_id, "before_id")
    if before.layer != layer:
        raise InvalidArgument(f"before_id {before_id!r} is not a model of layer {layer}", field="before_id")
    older = [info for info in models if info.ref < before]
    return older[-1] if older else None


def load_model_bytes(store: ObjectStore, model_id: str, *, verify: bool = True) -> bytes:
    """The weights of a registered model, checked against the sha256 in its metadata
    (Internal on a mismatch). NotFound unless both the metadata and the weights exist."""
    ref = parse_model_id(model_id)
    sidecar = _read_sidecar(store, ref)
    if sidecar is None:
        raise NotFound(f"model {model_id!r} not found")
    try:
        data = store.get_bytes(MODELS, ref.weights_key)
    except NotFound:
        raise NotFound(f"model {model_id!r} not found: its weights {MODELS}/{ref.weights_key} are missing") from None
    expected = str(sidecar.get("sha256") or "")
    if verify and expected and hashlib.sha256(data).hexdigest() != expected:
        raise Internal(f"model {model_id!r}: the weights in {MODELS}/{ref.weights_key} do not match their sha256")
    return data


# -- writing ---------------------------------------------------------------------------------------


def _stamp(now: datetime) -> str:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    return now.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def _taken_suffixes(store: ObjectStore, layer: int, stamp: str) -> set[int]:
    """Suffixes already used at ``stamp`` by files or claims (whole or half-done registrations)."""
    taken: set[int] = set()
    stem = f"restormer_layer{layer}_{stamp}"
    prefix = model_prefix(layer)
    for entry in store.list(MODELS, prefix + stem, recursive=False):
        parsed = _ref_from_file(entry.key.rsplit("/", 1)[-1])
        if parsed is not None and parsed[0].stamp == stamp:
            taken.add(parsed[0].suffix)
    for entry in store.list(MODELS, f"{prefix}{CLAIMS_FOLDER}/{stem}", recursive=False):
        name = entry.key.rstrip("/").rsplit("/", 1)[-1]
        parsed = _ref_from_file(name + ".pt")
        if parsed is not None and parsed[0].stamp == stamp:
            taken.add(parsed[0].suffix)
    return taken


def _claim(store: ObjectStore, ref: ModelRef) -> bool:
    """Write a claim for ``ref``; True if it is the only one (the id is ours)."""
    claim_key = f"{ref.claims_prefix}{uuid.uuid4().hex}"
    store.put_bytes(MODELS, claim_key, b"", "application/octet-stream")
    claims = [entry.key for entry in store.list(MODELS, ref.claims_prefix)]
    if claims == [claim_key]:
        return True
    store.delete(MODELS, claim_key)
    return False


def reserve_model_id(store: ObjectStore, layer: int, now: datetime) -> ModelRef:
    """A model id for ``layer`` at ``now`` that nobody else has or will get (see the module docstring)."""
    _check_layer(layer)
    stamp = _stamp(now)
    with _reserve_lock:
        taken = _taken_suffixes(store, layer, stamp)
        suffix = max(taken) + 1 if taken else 1
        for _ in range(_RESERVE_ATTEMPTS):
            if suffix > MAX_SUFFIX:
                break
            ref = ModelRef(stamp, suffix, layer)
            if _claim(store, ref):
                return ref
            log.info("model_id_taken", model_id=ref.model_id)
            suffix += 1
            time.sleep(random.uniform(0, 0.02))  # break lockstep with a registrant in another process
    raise Internal(f"could not reserve a model id for layer {layer} at {stamp}: too many registrations at once")


def register_model(
    store: ObjectStore,
    *,
    layer: int,
    model_bytes: bytes,
    metadata: Mapping[str, Any],
    now: datetime | None = None,
) -> RegisteredModelInfo:
    """Store a new model of ``layer``: the weights, then the metadata sidecar. Returns it as
    ``get_model`` would (version, previous model and deltas filled in).

    ``metadata`` (JSON-serializable) is stored in the sidecar as given; the fields read back are
    ``job_id`` (or ``parent_job_id``), ``architecture``, ``parameter_count``, ``dataset_prefix``,
    ``best_epoch``, ``metrics`` and ``baseline`` (``{"psnr", "ssim", "accuracy"}``),
    ``validation_loss`` and ``spec`` (or ``config``). The registry sets ``format``, ``model_id``,
    ``layer``, ``created_at``, ``bucket``, ``key``, ``size_bytes`` and ``sha256`` itself, over any
    the caller gave. InvalidArgument: ``layer`` outside 1..99 (field "layer"), empty
    ``model_bytes`` (field "model_bytes"), ``metadata`` not a JSON object (field "metadata").
    """
    _check_layer(layer)
    if not isinstance(model_bytes, bytes | bytearray | memoryview) or len(model_bytes) == 0:
        raise InvalidArgument("model_bytes must be non-empty bytes", field="model_bytes")
    if not isinstance(metadata, Mapping):
        raise InvalidArgument("metadata must be a mapping", field="metadata")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"metadata must be JSON-serializable without NaN: {exc}", field="metadata") from None
    now = now or datetime.now(UTC)
    data = bytes(model_bytes)

    ref = reserve_model_id(store, layer, now)
    weights = store.put_bytes(MODELS, ref.weights_key, data, WEIGHTS_CONTENT_TYPE, {"model-id": ref.model_id})
    sidecar = {
        **{k: v for k, v in metadata.items() if k not in RESERVED_KEYS},
        "format": FORMAT,
        "model_id": ref.model_id,
        "layer": layer,
        "created_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "bucket": MODELS,
        "key": ref.weights_key,
        "size_bytes": weights.size_bytes,
        "sha256": weights.sha256,
    }
    body = json.dumps(sidecar, indent=1, sort_keys=True).encode("utf-8")
    store.put_bytes(MODELS, ref.metadata_key, body, "application/json")
    log.info("model_registered", model_id=ref.model_id, key=ref.weights_key, size_bytes=weights.size_bytes)
    return get_model(store, ref.model_id)
