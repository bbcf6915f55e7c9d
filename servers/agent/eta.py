"""The overall progress of a character job: each stage weighted by its expected cost.

A stage's expected seconds are a fixed overhead (loading a model, storing results) plus a rate times
its work units: the tokens a sheet takes for text (``max_tokens`` is only a bound: a sheet ends when
its JSON closes, so the expected share of it is learned too), denoising steps x megapixels for
the image, and steps x strength x frames x megapixels for the video. Overheads and rates start at
defaults and follow the last runs (``CostModel.observe``), so the ETA improves as the server runs.
They are kept in the object store (``outputs/agent/stage-costs.json``), so a restarted agent starts
from what it learned. Progress is counted in units of 10 ms of expected
time. The ETA is the running stage's own (its pace so far over what is left of it) plus the expected
seconds of the stages after it: one stage's pace says little about another's (a slow text model and
a fast GPU, or the reverse).
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
    "text": 0.03,  # per token a sheet takes (~30 tokens/s)
    "image": 0.6,  # per denoising step of a 512x512 image
    "video": 0.4,  # per denoising step of one 512x512 frame
}
DEFAULT_TEXT_FILL = 0.4  # the share of max_tokens a sheet takes; learned
TEXT_FRACTION_CAP = 0.95  # a sheet's end is not known before it comes: never report the stage done early
LEARNING_RATE = 0.5  # weight of the newest observation in the moving average
RATES_KEY = "agent/stage-costs.json"  # in the outputs bucket


def work_units(request: CharacterRequest, stage: str) -> float:
    """A stage's size in the units its rate is measured in (for text, its bound: ``max_tokens``)."""
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
    costs are read from it by ``load`` and written back after each observation (best effort: a store
    that fails only costs the ETA its memory).

    A finished stage scales its overhead and its rate alike by what it really took against what was
    expected (one job cannot tell them apart; jobs of other sizes then move the rate). The defaults
    are guesses for a machine nobody measured, so a stage's first real observation replaces them;
    later ones move the estimate by ``LEARNING_RATE``."""

    def __init__(self, rates: dict[str, float] | None = None, store: ObjectStore | None = None) -> None:
        self._rates = dict(DEFAULT_RATES)
        self._rates.update(rates or {})
        self._overheads = dict(OVERHEAD_SECONDS)
        self._text_fill = DEFAULT_TEXT_FILL
        self._observed: set[str] = set()  # stages (and "text_fill") learned from at least one run
        self._lock = threading.Lock()
        self._store = store

    def load(self) -> None:
        """Take the costs the last runs stored; keep the defaults for what is missing or unreadable."""
        if self._store is None:
            return
        try:
            stored = json.loads(self._store.get_bytes(OUTPUTS, RATES_KEY))
        except NotFound:
            return
        except (GenmeshError, ValueError) as exc:
            log.warning("stage_costs_unreadable", key=RATES_KEY, error=str(exc))
            return
        if not isinstance(stored, dict):
            log.warning("stage_costs_unreadable", key=RATES_KEY, error="not a JSON object")
            return
        rates = _positive(stored.get("rates_seconds_per_unit"))
        overheads = _positive(stored.get("overhead_seconds"))
        fill = stored.get("text_fill")
        observed = stored.get("observed")
        with self._lock:
            self._rates.update(rates)
            self._overheads.update(overheads)
            if isinstance(fill, (int, float)) and 0 < fill <= 1:
                self._text_fill = float(fill)
            if isinstance(observed, list):
                self._observed |= {name for name in observed if name in (*DEFAULT_RATES, "text_fill")}

    def rate(self, stage: str) -> float:
        with self._lock:
            return self._rates[stage]

    def overhead(self, stage: str) -> float:
        with self._lock:
            return self._overheads[stage]

    def units(self, request: CharacterRequest, stage: str) -> float:
        """The work a stage is expected to take: for text, the tokens a sheet is expected to take."""
        if stage == "text":
            with self._lock:
                return max(1.0, request.text.max_tokens * self._text_fill)
        return work_units(request, stage)

    def text_fraction(self, request: CharacterRequest, tokens: int) -> float:
        """How far the text stage is after ``tokens``, against what a sheet is expected to take."""
        return min(TEXT_FRACTION_CAP, tokens / self.units(request, "text"))

    def observe_text(self, max_tokens: int, tokens: int, seconds: float) -> None:
        """A finished text stage: its pace per token and the share of ``max_tokens`` the sheet took."""
        if max_tokens > 0 and tokens > 0:
            with self._lock:
                weight = self._weight("text_fill")
                self._text_fill = (1 - weight) * self._text_fill + weight * min(1.0, tokens / max_tokens)
        self.observe("text", tokens, seconds)

    def expected_seconds(self, stage: str, units: float) -> float:
        with self._lock:
            return self._overheads[stage] + self._rates[stage] * units

    def observe(self, stage: str, units: float, seconds: float) -> None:
        """A finished stage of ``units`` that took ``seconds``."""
        if units <= 0 or seconds <= 0:
            return
        with self._lock:
            ratio = seconds / (self._overheads[stage] + self._rates[stage] * units)
            weight = self._weight(stage)
            scale = (1 - weight) + weight * ratio
            # Floors keep a stage that took no measurable time from weighing nothing in later plans.
            self._rates[stage] = max(self._rates[stage] * scale, DEFAULT_RATES[stage] / 1000)
            self._overheads[stage] = max(self._overheads[stage] * scale, 0.01)
            stored = {
                "rates_seconds_per_unit": dict(self._rates),
                "overhead_seconds": dict(self._overheads),
                "text_fill": round(self._text_fill, 4),
                "observed": sorted(self._observed),
            }
        if self._store is not None:
            try:
                data = json.dumps(stored, indent=2).encode()
                self._store.put_bytes(OUTPUTS, RATES_KEY, data, "application/json")
            except GenmeshError as exc:
                log.warning("stage_costs_not_stored", key=RATES_KEY, error=str(exc))

    def _weight(self, name: str) -> float:
        """The new observation's weight: whole the first time (it replaces a guess). Call locked."""
        first = name not in self._observed
        self._observed.add(name)
        return 1.0 if first else LEARNING_RATE

    def seconds_after(self, request: CharacterRequest, stage: str) -> float:
        """Expected seconds of the stages that run after ``stage``."""
        later = request.stages[request.stages.index(stage) + 1 :]
        return sum(self.expected_seconds(name, self.units(request, name)) for name in later)

    def plan(self, request: CharacterRequest) -> ProgressPlan:
        weights = {}
        for stage in request.stages:
            units = self.units(request, stage)
            weights[stage] = max(1, round(self.expected_seconds(stage, units) / UNIT_SECONDS))
        return ProgressPlan(weights)


def _positive(values: object) -> dict[str, float]:
    """The finite positive numbers of a stored stage -> number table, for known stages only."""
    if not isinstance(values, dict):
        return {}
    return {
        stage: float(value)
        for stage, value in values.items()
        if stage in DEFAULT_RATES and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    }


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
