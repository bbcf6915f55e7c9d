"""What a GenerateSyntheticData call asks for, validated, with its defaults (plain Python; the
servicer maps the protobuf request to a ``SyntheticSpec``)."""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from genmesh.errors import InvalidArgument
from servers.training.data.synthetic.content import CONTENT_KINDS
from servers.training.data.synthetic.degradations import PRESETS

MIN_IMAGES, MAX_IMAGES, DEFAULT_IMAGES = 1, 10_000, 20
MIN_SIDE, MAX_SIDE, DEFAULT_SIDE = 64, 2048, 256
MAX_SEED = 2**32 - 1
DEFAULT_PRESET = "document-clean"
DEFAULT_DATASET = "synthetic"
MAX_DATASET_CHARS = 64
DATASET_NAME_RE = re.compile(r"[a-z0-9-]{1,64}")


def default_content_kinds(degradation_type: str) -> tuple[str, ...]:
    """Documents for the ``document-*`` presets, every kind otherwise."""
    return ("documents",) if degradation_type.startswith("document-") else CONTENT_KINDS


def _check_int(value: Any, field: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{field} must be an integer between {low} and {high} (got {value!r})", field=field)
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low} and {high} (got {value})", field=field)


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic-data request. ``None`` / empty fields mean "the default" (see ``resolve``)."""

    num_images: int | None = DEFAULT_IMAGES
    degradation_type: str = DEFAULT_PRESET
    seed: int | None = None
    width: int | None = DEFAULT_SIDE
    height: int | None = DEFAULT_SIDE
    content_kinds: tuple[str, ...] = ()
    dataset_name: str = DEFAULT_DATASET

    def validate(self) -> None:
        """Raise ``InvalidArgument`` naming the first field out of range (unset fields are fine)."""
        if self.num_images is not None:
            _check_int(self.num_images, "num_images", MIN_IMAGES, MAX_IMAGES)
        if self.degradation_type and self.degradation_type not in PRESETS:
            raise InvalidArgument(
                f"degradation_type: unknown preset {self.degradation_type!r}; presets: {', '.join(PRESETS)}",
                field="degradation_type",
            )
        if self.seed is not None:
            _check_int(self.seed, "seed", 0, MAX_SEED)
        if self.width is not None:
            _check_int(self.width, "width", MIN_SIDE, MAX_SIDE)
        if self.height is not None:
            _check_int(self.height, "height", MIN_SIDE, MAX_SIDE)
        kinds = self.content_kinds
        if isinstance(kinds, str) or not isinstance(kinds, tuple | list):
            raise InvalidArgument(
                f"content_kinds must be a list of kinds from: {', '.join(CONTENT_KINDS)} (got {kinds!r})",
                field="content_kinds",
            )
        for kind in kinds:
            if kind not in CONTENT_KINDS:
                raise InvalidArgument(
                    f"content_kinds: unknown kind {kind!r}; kinds: {', '.join(CONTENT_KINDS)}", field="content_kinds"
                )
        if len(set(kinds)) != len(kinds):
            duplicate = next(k for k in kinds if list(kinds).count(k) > 1)
            raise InvalidArgument(
                f"content_kinds must be distinct, at most {len(CONTENT_KINDS)} (got {duplicate!r} more than once)",
                field="content_kinds",
            )
        name = self.dataset_name
        if not isinstance(name, str) or (name and not DATASET_NAME_RE.fullmatch(name)):
            raise InvalidArgument(
                f"dataset_name must be 1..{MAX_DATASET_CHARS} characters of [a-z0-9-] (got {name!r})",
                field="dataset_name",
            )

    def resolve(self, *, seed_if_unset: int | None = None) -> SyntheticSpec:
        """Validate, then fill every default: the returned spec has no ``None`` or empty field.

        An unset seed becomes ``seed_if_unset`` or, without one, a random 32-bit seed; report the
        returned spec's seed. Resolving a resolved spec returns an equal spec.
        """
        self.validate()
        preset = self.degradation_type or DEFAULT_PRESET
        seed = self.seed
        if seed is None:
            seed = secrets.randbits(32) if seed_if_unset is None else seed_if_unset
            _check_int(seed, "seed", 0, MAX_SEED)
        return replace(
            self,
            num_images=DEFAULT_IMAGES if self.num_images is None else self.num_images,
            degradation_type=preset,
            seed=seed,
            width=DEFAULT_SIDE if self.width is None else self.width,
            height=DEFAULT_SIDE if self.height is None else self.height,
            content_kinds=tuple(self.content_kinds) or default_content_kinds(preset),
            dataset_name=self.dataset_name or DEFAULT_DATASET,
        )

    @property
    def is_resolved(self) -> bool:
        return (
            None not in (self.num_images, self.seed, self.width, self.height)
            and bool(self.degradation_type)
            and bool(self.content_kinds)
            and bool(self.dataset_name)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able request parameters (content kinds as a list)."""
        data = asdict(self)
        data["content_kinds"] = list(self.content_kinds)
        return data
