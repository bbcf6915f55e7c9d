"""Scheduler (sampler) names -> diffusers scheduler classes and settings: one table.

The names are those of ``genmesh.common.v1.Scheduler`` in lower case without the prefix
(``SCHEDULER_DPMPP_2M_KARRAS`` -> ``"dpmpp_2m_karras"``; ``euler_a`` is ``SCHEDULER_EULER_ANCESTRAL``).
Each entry also carries the A1111-style label written into PNG metadata. A new scheduler is always
built from the model's own scheduler config (betas, timestep spacing, prediction type) with the
entry's settings on top; settings an entry leaves out are reset to the class default, so a Karras
base config never leaks Karras sigmas into a plain variant.

Optional dependencies: ``lms``/``lms_karras`` need ``scipy``; ``dpmpp_sde``/``dpmpp_sde_karras`` need
``torchsde``. Without them the name answers ``InvalidArgument`` naming ``scheduler``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genmesh.errors import InvalidArgument

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

FIELD = "scheduler"


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str  # a diffusers scheduler class
    label: str  # A1111's sampler name
    settings: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None  # optional package the class needs


_KARRAS = {"use_karras_sigmas": True}
_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPMPP_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}

SCHEDULERS: dict[str, SchedulerSpec] = {
    "euler": SchedulerSpec("EulerDiscreteScheduler", "Euler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler", "Euler a"),
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M", _DPMPP_2M),
    "dpmpp_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M Karras", {**_DPMPP_2M, **_KARRAS}),
    "dpmpp_2m_sde": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M SDE", _DPMPP_2M_SDE),
    "dpmpp_2m_sde_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler", "DPM++ 2M SDE Karras", {**_DPMPP_2M_SDE, **_KARRAS}
    ),
    "dpmpp_sde": SchedulerSpec("DPMSolverSDEScheduler", "DPM++ SDE", needs="torchsde"),
    "dpmpp_sde_karras": SchedulerSpec("DPMSolverSDEScheduler", "DPM++ SDE Karras", _KARRAS, needs="torchsde"),
    "ddim": SchedulerSpec("DDIMScheduler", "DDIM"),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", "UniPC"),
    "lms": SchedulerSpec("LMSDiscreteScheduler", "LMS", needs="scipy"),
    "lms_karras": SchedulerSpec("LMSDiscreteScheduler", "LMS Karras", _KARRAS, needs="scipy"),
    "pndm": SchedulerSpec("PNDMScheduler", "PNDM"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", "Heun"),
    "deis": SchedulerSpec("DEISMultistepScheduler", "DEIS"),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)


def scheduler_spec(name: str) -> SchedulerSpec:
    """The table entry for ``name``; ``InvalidArgument`` naming ``scheduler`` lists the allowed names."""
    try:
        return SCHEDULERS[name]
    except KeyError:
        allowed = ", ".join(SCHEDULER_NAMES)
        raise InvalidArgument(f"{FIELD}: unknown scheduler {name!r}; allowed: {allowed}", field=FIELD) from None


def _resolved_settings(cls: type, spec: SchedulerSpec) -> dict[str, Any]:
    """The entry's settings plus the defaults of those it leaves out, for the knobs the table varies."""
    parameters = inspect.signature(cls.__init__).parameters
    settings = {}
    for knob in ("use_karras_sigmas", "algorithm_type", "solver_order"):
        if knob in parameters:
            settings[knob] = spec.settings.get(knob, parameters[knob].default)
    return settings


def make_scheduler(name: str, base_config: dict[str, Any], *, seeds: Sequence[int] | None = None) -> SchedulerMixin:
    """A fresh scheduler ``name`` built from a model's scheduler config (``pipe.scheduler.config``).

    ``seeds`` (one per image of the batch) fix the Brownian-tree noise of ``dpmpp_sde*``, one tree
    per image, so a batch's image ``i`` matches the same seed run alone. The other stochastic
    schedulers draw from the pipeline's per-image generators instead.
    """
    import diffusers

    spec = scheduler_spec(name)
    cls = getattr(diffusers, spec.class_name)
    settings = _resolved_settings(cls, spec)
    if "noise_sampler_seed" in inspect.signature(cls.__init__).parameters and seeds:
        settings["noise_sampler_seed"] = list(seeds)  # always a list: the same code path for any batch size
    try:
        return cls.from_config(dict(base_config), **settings)
    except ImportError as exc:  # diffusers' placeholder class for a missing optional backend
        raise InvalidArgument(
            f"{FIELD}: {name!r} is not available on this server (it needs the {spec.needs or 'missing'} package)",
            field=FIELD,
        ) from exc


def scheduler_name(scheduler: SchedulerMixin) -> str | None:
    """The table name of a scheduler instance, or None when the table has no matching entry."""
    cls = type(scheduler)
    config = scheduler.config
    for name, spec in SCHEDULERS.items():
        if spec.class_name != cls.__name__:
            continue
        if all(config.get(knob) == value for knob, value in _resolved_settings(cls, spec).items()):
            return name
    return None


def scheduler_label(name: str) -> str:
    """A1111's name for a scheduler (for PNG metadata)."""
    return scheduler_spec(name).label
