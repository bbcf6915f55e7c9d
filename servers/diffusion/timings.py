"""A diffusion job's ``Timings`` message, the same for Image and Video (Video adds its encoding):
the engine's measures, then saving and the whole run until now. No proto is imported here: each
service passes its own message type."""

from __future__ import annotations

import time
from typing import Protocol, TypeVar

T = TypeVar("T")


class Queued(Protocol):
    queued_seconds: float  # a ``JobContext``


class Loaded(Protocol):
    load_seconds: float  # 0 when the model was loaded already


class Measured(Protocol):
    """What a generation measured (``GenerationResult``, ``AnimationResult``)."""

    denoise_seconds: float
    decode_seconds: float


def job_timings(
    timings_type: type[T],
    job: Queued,
    loaded: Loaded,
    measured: Measured,
    started: float,
    save_started: float,
    **more: float,
) -> T:
    """``started`` and ``save_started``: ``time.monotonic()`` when the job began running and saving."""
    now = time.monotonic()
    return timings_type(
        queued_seconds=job.queued_seconds,
        model_load_seconds=loaded.load_seconds,
        denoise_seconds=measured.denoise_seconds,
        decode_seconds=measured.decode_seconds,
        save_seconds=now - save_started,
        total_seconds=now - started,
        **more,
    )
