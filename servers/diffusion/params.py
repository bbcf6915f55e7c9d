"""Each diffusion request's limits in one place: the range, step (multiple of) and default of every
parameter of Image and Video requests, which the agent's image and video stages and the OpenAI
routes use too.

A request is checked once, at admission: the converters check each field the caller set against
its spec here (keeping only proto presence and oneof checks themselves), and the jobs' ``prepare``
check the rules that need a default first (``check_steps_strength``). The engines only fill in what
was left unset. Every message has one style, ``<field> must ... (got <value>)``, naming the field by
its path in the caller's request (``image.width`` in the agent's).

Torch- and grpc-free: the agent server imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from genmesh.errors import InvalidArgument, shown

N = TypeVar("N", int, float)

SEED_MODULUS = 2**32


def refuse(field: str, predicate: str) -> InvalidArgument:
    """The one message style for a limit: ``"<field> <predicate>"`` (``steps must be ...``)."""
    return InvalidArgument(f"{field} {predicate}", field=field)


def require(condition: bool, field: str, predicate: str) -> None:
    if not condition:
        raise refuse(field, predicate)


def check_pixel_budget(width: int, height: int, count: int, max_pixels: int, field: str, advice: str) -> None:
    """The most pixels one job may make on a server (``GENMESH_<SERVICE>_MAX_PIXELS``): over it is
    INVALID_ARGUMENT naming ``field``, the count (``num_images``, ``num_frames``), with ``advice``."""
    pixels = width * height * count
    if pixels > max_pixels:
        raise InvalidArgument(
            f"{field}: width x height x {field} is {pixels} pixels; this server allows at most {max_pixels} per job "
            f"({advice})",
            field=field,
        )


@dataclass(frozen=True)
class Limit:
    """A number's allowed values: ``low..high`` (``low`` excluded when ``low_open``), a multiple of
    ``multiple_of`` when set."""

    low: float
    high: float
    multiple_of: int = 0
    low_open: bool = False

    def check(self, value: N, field: str) -> N:
        low, high, got = shown(self.low), shown(self.high), shown(value)
        if self.low_open:
            require(self.low < value <= self.high, field, f"must be greater than {low} and at most {high} (got {got})")
        else:
            require(self.low <= value <= self.high, field, f"must be between {low} and {high} (got {got})")
        if self.multiple_of:
            require(value % self.multiple_of == 0, field, f"must be a multiple of {self.multiple_of} (got {value})")
        return value

    def describe(self) -> str:
        """``64..2048, a multiple of 8`` (for help texts)."""
        text = f"{shown(self.low)}..{shown(self.high)}"
        if self.low_open:
            text = f"({shown(self.low)}, {shown(self.high)}]"
        return text + (f", a multiple of {self.multiple_of}" if self.multiple_of else "")


@dataclass(frozen=True)
class Text:
    """A string's allowed length; ``required``: not empty (nor only spaces)."""

    max_chars: int
    required: bool = False

    def check(self, value: str, field: str) -> str:
        require(not self.required or bool(value.strip()), field, "must not be empty")
        require(len(value) <= self.max_chars, field, f"must be at most {self.max_chars} characters (got {len(value)})")
        return value


PROMPT = Text(10_000, required=True)
NEGATIVE_PROMPT = Text(10_000)
STEPS = Limit(1, 150)
GUIDANCE = Limit(0.0, 30.0)
SEED = Limit(0, SEED_MODULUS - 1)
STRENGTH = Limit(0.0, 1.0, low_open=True)
PREVIEW_INTERVAL = Limit(0, STEPS.high)

# Every limit of a task's request, by field name. The agent's stage options use these under their
# stage's prefix (``image.width``).
IMAGE: Mapping[str, Limit | Text] = {
    "prompt": PROMPT,
    "negative_prompt": NEGATIVE_PROMPT,
    "width": Limit(64, 2048, multiple_of=8),
    "height": Limit(64, 2048, multiple_of=8),
    "steps": STEPS,
    "guidance_scale": GUIDANCE,
    "seed": SEED,
    "num_images": Limit(1, 8),
    "strength": STRENGTH,
    "quality": Limit(1, 100),
    "preview_interval_steps": PREVIEW_INTERVAL,
}
VIDEO: Mapping[str, Limit | Text] = {
    "prompt": PROMPT,
    "negative_prompt": NEGATIVE_PROMPT,
    "width": Limit(64, 1024, multiple_of=8),
    "height": Limit(64, 1024, multiple_of=8),
    "num_frames": Limit(2, 64),
    "fps": Limit(1, 60),
    "steps": STEPS,
    "guidance_scale": GUIDANCE,
    "seed": SEED,
    "strength": STRENGTH,
    "preview_interval_steps": PREVIEW_INTERVAL,
}
MAX_SCHEDULE_ENTRIES = 16  # prompt_schedule entries (prompt travel)


def check(spec: Mapping[str, Limit | Text], name: str, value: Any, prefix: str = "") -> Any:
    """``value`` checked against ``spec[name]``, named ``prefix + name``; ``None`` (unset) passes."""
    if value is None:
        return None
    return spec[name].check(value, prefix + name)


def optional(spec: Mapping[str, Limit | Text], message: Any, name: str, prefix: str = "") -> Any:
    """A proto3 ``optional`` field checked against ``spec[name]``, or ``None`` when unset."""
    return check(spec, name, getattr(message, name) if message.HasField(name) else None, prefix)


def check_steps_strength(steps: int, strength: float | None, field: str = "strength") -> None:
    """img2img and vid2vid run ``int(steps x strength)`` denoising steps: at least one must run."""
    if strength is not None:
        got = f"got {shown(strength)} x {steps}"
        require(int(steps * strength) >= 1, field, f"x steps must be at least 1, so that a denoising step runs ({got})")


# -- defaults ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Defaults:
    """What a request that leaves these fields unset gets. ``side`` None: the model family's native
    size (or the init image's). ``why``: for whom they are lighter than the model's own ('' if not)."""

    steps: int
    guidance_scale: float = 7.5
    side: int | None = None
    num_frames: int = 0  # video only
    why: str = ""

    @property
    def note(self) -> str:
        """Every light default, for ListModels; '' for native ones."""
        size = (self.side, self.side) if self.side else None
        return self.note_for(size=size, frames=self.num_frames or None, steps=self.steps)

    def note_for(self, *, size: tuple[int, int] | None, frames: int | None, steps: int | None) -> str:
        """What a result says about the light defaults it got (those given; '' for native ones):
        ``light defaults for the smoke-test model: 128x128, 4 steps (set them to override)``."""
        parts = [
            f"{size[0]}x{size[1]}" if size else "",
            f"{frames} frames" if frames else "",
            f"{steps} steps" if steps else "",
        ]
        used = ", ".join(part for part in parts if part)
        return f"light defaults for {self.why}: {used} (set them to override)" if self.why and used else ""


# The models' native defaults (what a real model on a GPU gets).
IMAGE_NATIVE = Defaults(steps=25)
VIDEO_NATIVE = Defaults(steps=25, side=512, num_frames=16)  # AnimateDiff was trained on 16 frames at 512
# Light defaults for the built-in smoke-test models (they draw noise: only the plumbing is shown) and
# for any model on a CPU: the smoke-test ones measured on 2 shared cores to finish in well under a
# minute (client/README.md, "Defaults on a CPU"); the CPU ones are the smallest sizes SD1.5 still
# draws at, not measured with real weights.
IMAGE_LIGHT = {"smoke_test": Defaults(steps=8, side=256), "cpu": Defaults(steps=12, side=256)}
VIDEO_LIGHT = {
    "smoke_test": Defaults(steps=4, side=128, num_frames=8),
    "cpu": Defaults(steps=8, side=256, num_frames=8),
}
_WHY = {"smoke_test": "the smoke-test model", "cpu": "a CPU"}


def defaults_for(native: Defaults, light: Mapping[str, Defaults], *, smoke_test: bool, cpu: bool) -> Defaults:
    """The defaults of a model on a device: its native ones, or the light ones for the smoke-test
    model or a CPU, saying for whom."""
    kind = "smoke_test" if smoke_test else "cpu" if cpu else ""
    if not kind:
        return native
    return replace(light[kind], why=_WHY[kind])


def fit_within(width: int, height: int, side: int) -> tuple[int, int]:
    """An input's ``width`` x ``height`` scaled down to fit ``side`` (aspect kept), in multiples of 8,
    at least 64: the light defaults' size for an init image or video."""
    scale = min(1.0, side / max(width, height))
    return tuple(max(64, int(value * scale) // 8 * 8) for value in (width, height))  # type: ignore[return-value]


def image_defaults(*, smoke_test: bool, cpu: bool) -> Defaults:
    return defaults_for(IMAGE_NATIVE, IMAGE_LIGHT, smoke_test=smoke_test, cpu=cpu)


def video_defaults(*, smoke_test: bool, cpu: bool) -> Defaults:
    return defaults_for(VIDEO_NATIVE, VIDEO_LIGHT, smoke_test=smoke_test, cpu=cpu)


# -- rules across fields -----------------------------------------------------------------------------
def check_prompt_schedule(schedule: Mapping[int, str], field: str = "prompt_schedule") -> None:
    """Prompt travel's entries (frame -> prompt), apart from the clip's length (``check_video_frames``)."""
    require(len(schedule) <= MAX_SCHEDULE_ENTRIES, field,
            f"must have at most {MAX_SCHEDULE_ENTRIES} entries (got {len(schedule)})")  # fmt: skip
    for frame, text in schedule.items():
        require(frame >= 0, field, f"must name frames from 0 (got frame {frame})")
        PROMPT.check(text, f"{field}[{frame}]")


def check_video_frames(num_frames: int, schedule: Mapping[int, str], init_video_frames: int | None) -> None:
    """The rules that need the clip's length, once defaults are filled (an init video sets it)."""
    if init_video_frames is not None:
        require(num_frames <= init_video_frames, "num_frames",
                f"must be at most the init video's {init_video_frames} frames (got {num_frames})")  # fmt: skip
    late = [frame for frame in schedule if frame >= num_frames]
    require(not late, "prompt_schedule", f"must name frames within 0..{num_frames - 1} (got frame {min(late or [0])})")
