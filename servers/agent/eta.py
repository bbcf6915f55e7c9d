"""The overall progress of a character job: each stage weighted by its expected cost.

A stage's expected seconds are a fixed overhead (loading a model, storing results) plus a rate times
its work units: tokens for text (``max_tokens``, an upper bound), denoising steps x megapixels for
the image, and steps x strength x frames x megapixels for the video. The rates start at defaults and
follow the last runs (an exponential moving average of the observed seconds per unit), so the ETA
improves as the server runs. Progress is counted in units of 10 ms of expected time, and the queue's
ETA (elapsed / done x left) then extrapolates the observed pace over the weighted work left.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from servers.agent.types import CharacterRequest

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
    """Expected seconds per stage, learned from the stages this process ran. Thread-safe."""

    def __init__(self, rates: dict[str, float] | None = None) -> None:
        self._rates = dict(rates or DEFAULT_RATES)
        self._lock = threading.Lock()

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
            self._rates[stage] = (1 - LEARNING_RATE) * self._rates[stage] + LEARNING_RATE * observed

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
