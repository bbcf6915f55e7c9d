"""The overall progress of a character job: each stage weighted by its expected cost.

A stage's expected seconds are a fixed overhead (loading a model, storing results) plus a rate times
its work units: tokens for text (``max_tokens``, an upper bound), denoising steps x megapixels for
the image, and steps x strength x frames x megapixels for the video. The rates start at defaults and
follow the last runs (an exponential moving average of the observed seconds per unit), so the ETA
improves as the server runs. The rates are kept in the object store (``outputs/agent/stage-costs.json``),
so a restarted agent starts from what it learned. Progress is counted in units of 10 ms of expected
time, and the queue's ETA (elapsed / done x left) then extrapolates the observed pace over the
weighted work left.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass

import structlog

from genmesh.errors import GenmeshError, NotFound
from servers.agent.types import CharacterRequest
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

UNIT_SECONDS = 0.01  # one progress unit is 10 ms of expected run time
BASE_PIXELS = 512 * 512
DEFAULT_IMAGE_SIDE = 512
DEFAULT_STEPS = 25
DEFAULT_FRAMES = 16
DEFAULT_STRENGTH = 0.8

# Seconds per stage whatever its size (sub-job round trip, model load when cold, copies to storage).
OVERHEAD_SECONDS = {"text": 2.0, "image": 2.0, "video": 3.0}
# Seconds per work unit on a modest machine; refined by every finished stage.
DEFAULT_RATES = {
    "text": 0.015,  # per token of max_tokens (a sheet takes about half of them, at ~30 tokens/s)
    "image": 0.6,  # per denoising step of a 512x512 image
    "video": 0.4,  # per denoising step of one 512x512 frame
}
LEARNING_RATE = 0.5  # weight of the newest observation in the moving average
RATES_KEY = "agent/stage-costs.json"  # in the outputs bucket


def work_units(request: CharacterRequest, stage: str) -> float:
    """A stage's size in the units its rate is measured in."""
    image = request.image
    megapixels = (image.width or DEFAULT_IMAGE_SIDE) * (image.height or DEFAULT_IMAGE_SIDE) / BASE_PIXELS
    if stage == "text":
        return float(request.text.max_tokens)
    if stage == "image":
        return (image.steps or request.steps or DEFAULT_STEPS) * megapixels
    video = request.video
    steps = (video.steps or request.steps or DEFAULT_STEPS) * (video.strength or DEFAULT_STRENGTH)
    return max(1.0, steps) * (video.num_frames or DEFAULT_FRAMES) * megapixels


class CostModel:
    """Expected seconds per stage, learned from the stages run so far. Thread-safe. With a ``store``, the
    rates are read from it by ``load`` and written back after each observation (best effort: a store
    that fails only costs the ETA its memory)."""

    def __init__(self, rates: dict[str, float] | None = None, store: ObjectStore | None = None) -> None:
        self._rates = dict(DEFAULT_RATES)
        self._rates.update(rates or {})
        self._lock = threading.Lock()
        self._store = store

    def load(self) -> None:
        """Take the rates the last runs stored; keep the defaults for what is missing or unreadable."""
        if self._store is None:
            return
        try:
            stored = json.loads(self._store.get_bytes(OUTPUTS, RATES_KEY))
        except NotFound:
            return
        except (GenmeshError, ValueError) as exc:
            log.warning("stage_costs_unreadable", key=RATES_KEY, error=str(exc))
            return
        rates = stored.get("rates_seconds_per_unit", {}) if isinstance(stored, dict) else {}
        valid = {
            stage: float(rate)
            for stage, rate in (rates.items() if isinstance(rates, dict) else ())
            if stage in DEFAULT_RATES and isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0
        }
        with self._lock:
            self._rates.update(valid)

    def rate(self, stage: str) -> float:
        with self._lock:
            return self._rates[stage]

    def expected_seconds(self, stage: str, units: float) -> float:
        return OVERHEAD_SECONDS[stage] + self.rate(stage) * units

    def observe(self, stage: str, units: float, seconds: float) -> None:
        """A finished stage: move the stage's rate toward what it took (overhead excluded)."""
        if units <= 0 or seconds <= 0:
            return
        observed = max(0.0, seconds - OVERHEAD_SECONDS[stage]) / units
        with self._lock:
            # A floor keeps a stage that took no measurable time from weighing nothing in later plans.
            updated = (1 - LEARNING_RATE) * self._rates[stage] + LEARNING_RATE * observed
            self._rates[stage] = max(updated, DEFAULT_RATES[stage] / 1000)
            rates = dict(self._rates)
        if self._store is not None:
            try:
                data = json.dumps({"rates_seconds_per_unit": rates}, indent=2).encode()
                self._store.put_bytes(OUTPUTS, RATES_KEY, data, "application/json")
            except GenmeshError as exc:
                log.warning("stage_costs_not_stored", key=RATES_KEY, error=str(exc))

    def plan(self, request: CharacterRequest) -> ProgressPlan:
        weights = {}
        for stage in request.stages:
            units = work_units(request, stage)
            weights[stage] = max(1, round(self.expected_seconds(stage, units) / UNIT_SECONDS))
        return ProgressPlan(weights)


@dataclass(frozen=True)
class ProgressPlan:
    """Each stage's weight in progress units, in the order they run."""

    weights: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.weights.values())

    def step(self, stage: str, fraction: float) -> int:
        """Units done when ``stage`` is ``fraction`` (0..1) done: every earlier stage counts whole."""
        done = 0
        for name, weight in self.weights.items():
            if name == stage:
                return done + round(weight * min(1.0, max(0.0, fraction)))
            done += weight
        raise KeyError(stage)
