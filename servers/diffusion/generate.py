"""Run txt2img or img2img on a loaded model: parameters in, PIL images out.

Image ``i`` of a batch starts from its own CPU generator seeded ``seed + i`` (mod 2^32), so the
starting noise is the same on every device, a batch runs in one pass, and any image of it can be
re-made alone with ``seed + i`` and ``num_images = 1`` (identical noise; on the CPU identical
pixels too, while GPU kernels may round a batch differently in the last bits). The same seed,
model, parameters, device and thread count give identical pixels.

Inpainting (a mask with the init image, white = re-draw): a model with a 9-channel inpainting UNet
takes the mask and the masked image itself; a regular model runs diffusers' inpainting pipeline,
which after every step puts back the init image's latents (noised to that step) outside the mask.
Either way the finished pixels outside the mask are the init image's (composited with the mask as
alpha, as AUTOMATIC1111 does), so what the mask keeps survives even a VAE round trip. An inpainting
model runs txt2img and img2img as inpainting with an all-white mask.

LoRAs (``params.loras``, resolved by ``servers.diffusion.lora``) are switched on the model before
the run: the base model is never reloaded for them.

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

from servers.diffusion.families import ModelFamily, Task, family_spec
from servers.diffusion.memory import out_of_memory_guard
from servers.diffusion.params import IMAGE, IMAGE_NATIVE, SEED_MODULUS, require
from servers.diffusion.progress import StepCallback
from servers.diffusion.sampling import SamplingParams
from servers.diffusion.schedulers import make_scheduler
from servers.media.images import fit_image, snap_size
from servers.runtime.events import NULL_REPORTER, Reporter

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

    from servers.diffusion.loading import LoadedModel

# Limits live in servers.diffusion.params (checked at admission); these are what unset fields get.
MAX_SIDE = int(IMAGE["width"].high)  # an init image larger than this is scaled down for its default size
MIN_SIDE = int(IMAGE["width"].low)
DEFAULT_STEPS = IMAGE_NATIVE.steps
DEFAULT_GUIDANCE = IMAGE_NATIVE.guidance_scale
DEFAULT_STRENGTH = 0.75
DEFAULT_INPAINT_STRENGTH = 1.0  # the masked region starts from noise: white re-draws it


@dataclass(frozen=True)
class GenerationParams(SamplingParams):
    """One request. ``None`` means the default: the init image's size (img2img) or the model's
    native size, the model's own scheduler, strength 0.75 (img2img only)."""

    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    num_images: int = 1
    mask_image: Image.Image | None = None  # inpainting: greyscale ("L"), white re-draws; needs init_image

    @property
    def task(self) -> Task:
        if self.mask_image is not None:
            return Task.INPAINT
        return Task.IMG2IMG if self.init_image is not None else Task.TXT2IMG


@dataclass(frozen=True)
class GenerationResult:
    images: list[Image.Image]
    seeds: list[int]  # seeds[i] made images[i]
    params: GenerationParams  # every default resolved (scheduler named, size and strength set)
    steps_run: int  # denoising steps that ran (img2img: about steps * strength)
    denoise_seconds: float  # from the call to the last step (includes prompt encoding, img2img's VAE encode)
    decode_seconds: float  # from the last step to the images (VAE decode, conversion to PIL)
    inpaint_mode: str = ""  # "inpainting_model" (9-channel UNet), "latent_blend", or "" (no mask)


def _default_size(params: GenerationParams, family: ModelFamily) -> tuple[int, int]:
    if params.init_image is None:
        native = family_spec(family).native_resolution
        return native, native
    image = params.init_image
    scale = min(1.0, MAX_SIDE / max(image.size))  # larger photos keep their aspect ratio
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    width, height = snap_size(image)
    return max(MIN_SIDE, width), max(MIN_SIDE, height)


def check_mask(mask: Image.Image, init_image: Image.Image | None, field: str = "mask_image") -> None:
    """A mask needs an init image of its size (``InvalidArgument`` naming ``field``)."""
    require(init_image is not None, field, "needs an init image (init_image_data or init_image_ref) to inpaint")
    assert init_image is not None
    require(
        mask.size == init_image.size,
        field,
        f"is {mask.width}x{mask.height}; it must be the init image's size ({init_image.width}x{init_image.height})",
    )


def default_strength(has_mask: bool) -> float:
    return DEFAULT_INPAINT_STRENGTH if has_mask else DEFAULT_STRENGTH


def resolve_params(params: GenerationParams, family: ModelFamily | str, default_scheduler: str) -> GenerationParams:
    """``params`` with what was left unset filled in: the init image's size or the family's native
    one, the model's scheduler, img2img's strength. Nothing is checked here: the service checked the
    request at admission against ``servers.diffusion.params``."""
    width, height = _default_size(params, ModelFamily(family))
    strength = params.strength
    if params.init_image is not None and strength is None:
        strength = default_strength(params.mask_image is not None)
    return replace(
        params,
        width=params.width if params.width is not None else width,
        height=params.height if params.height is not None else height,
        scheduler=params.scheduler or default_scheduler,
        strength=strength,
    )


def generators_for(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded ``seed + i`` (mod 2^32)."""
    return [torch.Generator(device="cpu").manual_seed((seed + index) % SEED_MODULUS) for index in range(count)]


def run_pipeline(
    pipe: DiffusionPipeline,
    params: GenerationParams,
    *,
    family: ModelFamily | str,
    reporter: Reporter = NULL_REPORTER,
    inpainting_unet: bool = False,
) -> GenerationResult:
    """Run ``pipe`` (the pipeline for ``params.task``; an inpainting pipeline for every task when
    ``inpainting_unet``) once, batched.

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
    init_image, mask = _inputs(params, inpainting_unet)
    if init_image is not None:
        call["image"] = init_image
        call["strength"] = params.strength if params.init_image is not None else 1.0
    if mask is not None:
        call["mask_image"] = mask
    if init_image is None or mask is not None:  # the inpainting pipelines also take the size
        call["width"], call["height"] = params.width, params.height

    reporter.check_cancelled()
    own_scheduler = pipe.scheduler
    pipe.scheduler = make_scheduler(params.scheduler, own_scheduler.config, seeds=seeds)
    started = time.monotonic()
    try:
        output = pipe(**call)
    finally:
        pipe.scheduler = own_scheduler
    images = list(output.images)
    if mask is not None and init_image is not None:
        images = [keep_unmasked(image, init_image, mask) for image in images]
    ended = time.monotonic()
    last_step = callback.last_step_at or ended
    inpaint_mode = ""
    if params.mask_image is not None:
        inpaint_mode = "inpainting_model" if inpainting_unet else "latent_blend"
    return GenerationResult(
        images=images,
        seeds=seeds,
        params=params,
        steps_run=callback.steps_done,
        denoise_seconds=last_step - started,
        decode_seconds=ended - last_step,
        inpaint_mode=inpaint_mode,
    )


def _inputs(params: GenerationParams, inpainting_unet: bool) -> tuple[Image.Image | None, Image.Image | None]:
    """(init image, mask) at the output size, as the pipeline takes them. An inpainting UNet always
    gets a mask: all white (re-draw everything) for txt2img and img2img, over black for txt2img."""
    from PIL import Image

    assert params.width is not None and params.height is not None
    size = (params.width, params.height)
    init = fit_image(params.init_image, *size) if params.init_image is not None else None
    mask = fit_image(params.mask_image, *size).convert("L") if params.mask_image is not None else None
    if inpainting_unet and mask is None:
        mask = Image.new("L", size, 255)
        init = init if init is not None else Image.new("RGB", size)
    return init, mask


def keep_unmasked(image: Image.Image, init_image: Image.Image, mask: Image.Image) -> Image.Image:
    """``image`` where ``mask`` is white, ``init_image`` where it is black (grey blends)."""
    from PIL import Image

    return Image.composite(image.convert("RGB"), init_image.convert("RGB"), mask.convert("L"))


def generate(model: LoadedModel, params: GenerationParams, reporter: Reporter = NULL_REPORTER) -> GenerationResult:
    """Resolve ``params`` for ``model``, switch its LoRAs, pick the task's pipeline, run it; device
    out-of-memory becomes ``ResourceExhausted`` (advice included) and leaves the model usable."""
    params = resolve_params(params, model.family, model.default_scheduler)
    inpainting_unet = model.inpainting
    pipe = model.pipeline(Task.INPAINT if inpainting_unet else params.task)
    with out_of_memory_guard(model.device, model.memory_mode):
        model.loras.activate(model.pipeline(model.root_task), params.loras)
        return run_pipeline(pipe, params, family=model.family, reporter=reporter, inpainting_unet=inpainting_unet)
