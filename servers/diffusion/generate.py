"""Run txt2img or img2img on a loaded model: parameters in, PIL images out.

Image ``i`` of a batch starts from its own CPU generator seeded ``seed + i`` (mod 2^32), so the
starting noise is the same on every device, a batch runs in one pass, and any image of it can be
re-made alone with ``seed + i`` and ``num_images = 1`` (identical noise; on the CPU identical
pixels too, while GPU kernels may round a batch differently in the last bits). The same seed,
model, parameters, device and thread count give identical pixels.

Each call builds a fresh scheduler (the requested one, or the model's own) from the model's
scheduler config, so no state leaks between requests, and puts the model's own back afterwards.
Progress, previews and cancellation go through :class:`servers.diffusion.progress.StepCallback`;
device out-of-memory becomes ``ResourceExhausted``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from genmesh.errors import require, require_range
from servers.diffusion.families import ModelFamily, Task, family_spec
from servers.diffusion.memory import out_of_memory_guard
from servers.diffusion.progress import StepCallback
from servers.diffusion.schedulers import make_scheduler, scheduler_spec
from servers.media.images import fit_image, snap_size
from servers.runtime.events import NULL_REPORTER, Reporter

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

    from servers.diffusion.loading import LoadedModel

SEED_MODULUS = 2**32
MAX_PROMPT_CHARS = 10_000
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_IMAGES = 8
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_STRENGTH = 0.75


@dataclass(frozen=True)
class GenerationParams:
    """One request. ``None`` means the default: the init image's size (img2img) or the model's
    native size, the model's own scheduler, strength 0.75 (img2img only)."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    seed: int = 0
    scheduler: str | None = None
    num_images: int = 1
    strength: float | None = None
    init_image: Image.Image | None = None  # RGB, e.g. from servers.media.images.decode_image
    preview_every: int = 0  # a preview every N steps; 0 for none

    @property
    def task(self) -> Task:
        return Task.IMG2IMG if self.init_image is not None else Task.TXT2IMG


@dataclass(frozen=True)
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]  # seeds[i] made images[i]
    params: GenerationParams  # every default resolved (scheduler named, size and strength set)
    steps_run: int  # denoising steps that ran (img2img: about steps * strength)
    denoise_seconds: float  # from the call to the last step (includes prompt encoding, img2img's VAE encode)
    decode_seconds: float  # from the last step to the images (VAE decode, conversion to PIL)


def _default_size(params: GenerationParams, family: ModelFamily) -> tuple[int, int]:
    if params.init_image is None:
        native = family_spec(family).native_resolution
        return native, native
    image = params.init_image
    scale = min(1.0, MAX_SIDE / max(image.size))  # larger photos keep their aspect ratio
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return snap_size(image)


def resolve_params(params: GenerationParams, family: ModelFamily | str, default_scheduler: str) -> GenerationParams:
    """``params`` with defaults filled in and every field checked (``InvalidArgument`` names it)."""
    family = ModelFamily(family)
    require(0 < len(params.prompt) <= MAX_PROMPT_CHARS, "prompt", f"must be 1..{MAX_PROMPT_CHARS} characters")
    require(
        len(params.negative_prompt) <= MAX_PROMPT_CHARS, "negative_prompt", f"at most {MAX_PROMPT_CHARS} characters"
    )
    width, height = _default_size(params, family)
    width = params.width if params.width is not None else width
    height = params.height if params.height is not None else height
    for name, value in (("width", width), ("height", height)):
        require_range(value, name, MIN_SIDE, MAX_SIDE)
        require(value % 8 == 0, name, f"must be a multiple of 8 (got {value})")
    require_range(params.steps, "steps", 1, MAX_STEPS)
    require_range(params.guidance_scale, "guidance_scale", 0.0, MAX_GUIDANCE)
    require_range(params.seed, "seed", 0, SEED_MODULUS - 1)
    require_range(params.num_images, "num_images", 1, MAX_IMAGES)
    require_range(params.preview_every, "preview_interval_steps", 0, MAX_STEPS)
    scheduler = params.scheduler or default_scheduler
    scheduler_spec(scheduler)  # InvalidArgument naming "scheduler" for unknown names
    strength = params.strength
    if params.init_image is None:
        require(strength is None, "strength", "is only valid with an init image (img2img)")
    else:
        strength = DEFAULT_STRENGTH if strength is None else strength
        require(0.0 < strength <= 1.0, "strength", f"must be in (0, 1] (got {strength})")
        require(
            int(params.steps * strength) >= 1,
            "strength",
            f"steps * strength must be at least 1 (got {params.steps} * {strength})",
        )
    return replace(params, width=width, height=height, scheduler=scheduler, strength=strength)


def generators_for(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded ``seed + i`` (mod 2^32)."""
    return [torch.Generator(device="cpu").manual_seed((seed + index) % SEED_MODULUS) for index in range(count)]


def run_pipeline(
    pipe: DiffusionPipeline,
    params: GenerationParams,
    *,
    family: ModelFamily | str,
    reporter: Reporter = NULL_REPORTER,
) -> GenerationResult:
    """Run ``pipe`` (a txt2img or img2img pipeline matching ``params.task``) once, batched.

    ``params`` must be resolved (:func:`resolve_params`). Raises ``genmesh.errors.Cancelled``
    (from ``reporter.check_cancelled()``) before the first step or after any step: then nothing is
    decoded and no image is returned.
    """
    if params.width is None or params.height is None or params.scheduler is None:
        raise ValueError("generation parameters must be resolved first (resolve_params)")
    seeds = [(params.seed + index) % SEED_MODULUS for index in range(params.num_images)]
    callback = StepCallback(
        reporter, family, preview_every=params.preview_every, total_steps=params.steps, announce_decoding=True
    )
    call: dict[str, Any] = {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt or None,
        "num_inference_steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "num_images_per_prompt": params.num_images,
        "generator": generators_for(params.seed, params.num_images),
        "callback_on_step_end": callback,
        "callback_on_step_end_tensor_inputs": ["latents"],
        "output_type": "pil",
    }
    if params.init_image is not None:
        call["image"] = fit_image(params.init_image, params.width, params.height)
        call["strength"] = params.strength
    else:
        call["width"], call["height"] = params.width, params.height

    reporter.check_cancelled()
    own_scheduler = pipe.scheduler
    pipe.scheduler = make_scheduler(params.scheduler, own_scheduler.config, seeds=seeds)
    started = time.monotonic()
    try:
        output = pipe(**call)
    finally:
        pipe.scheduler = own_scheduler
    ended = time.monotonic()
    last_step = callback.last_step_at or ended
    return GenerationResult(
        images=list(output.images),
        seeds=seeds,
        params=params,
        steps_run=callback.steps_done,
        denoise_seconds=last_step - started,
        decode_seconds=ended - last_step,
    )


def generate(model: LoadedModel, params: GenerationParams, reporter: Reporter = NULL_REPORTER) -> GenerationResult:
    """Resolve ``params`` for ``model``, pick its txt2img or img2img pipeline, run it; device
    out-of-memory becomes ``ResourceExhausted`` (advice included) and leaves the model usable."""
    params = resolve_params(params, model.family, model.default_scheduler)
    pipe = model.pipeline(params.task)
    with out_of_memory_guard(model.device, model.memory_mode):
        return run_pipeline(pipe, params, family=model.family, reporter=reporter)
