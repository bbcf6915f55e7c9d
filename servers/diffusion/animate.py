"""Run AnimateDiff on a loaded model: parameters in, PIL frames out.

Three tasks on one loaded model (``LoadedModel`` with a motion adapter): text-to-video,
image-to-video (the still repeated over every frame, re-noised by ``strength``: the usual way to
animate a still with a motion module) and video-to-video. The starting noise comes from one CPU
generator seeded ``seed``, so the same seed, parameters and device give the same frames.

Long clips: above ``CONTEXT_LENGTH`` frames (and whenever a prompt schedule is given, which needs
it) the motion modules run over sliding context windows (FreeNoise: 16 frames, stride 4), the
length the motion modules were trained on. FreeNoise changes the pipeline's modules, so it is
switched on for the job and off again after it.

LoRAs (``params.loras``) are switched on the loaded model first, as for images: they apply to the
base UNet's layers (the motion modules are left alone) and the text encoder.

Memory: the pipeline is asked for latents, and this module decodes them itself, a few frames at a
time (``decode_chunk_size``): decoding never holds every frame at full resolution in the VAE, each
chunk reports progress, and a cancel between chunks stops at once. A device out-of-memory error is
retried once in the lower-memory configuration (feed-forward chunking, FreeNoise split inference
for long clips, one frame decoded at a time; undone after the job), which ``lowvram`` servers use
from the start; a second failure is ``ResourceExhausted`` advising fewer frames or a smaller size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import structlog
import torch

from servers.compute.memory import free_device_memory, is_out_of_memory
from servers.diffusion.families import Task
from servers.diffusion.memory import VIDEO_ADVICE, MemoryMode, out_of_memory_guard
from servers.diffusion.params import VIDEO, VIDEO_NATIVE
from servers.diffusion.progress import StepCallback
from servers.diffusion.sampling import SamplingParams
from servers.diffusion.schedulers import make_scheduler
from servers.media.images import fit_image, snap_size
from servers.runtime.events import Reporter, StageChanged

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

    from servers.diffusion.loading import LoadedModel

log = structlog.get_logger(__name__)

# Limits live in servers.diffusion.params (checked at admission); these are what unset fields get.
MIN_SIDE, MAX_SIDE = int(VIDEO["width"].low), int(VIDEO["width"].high)
MAX_FRAMES = int(VIDEO["num_frames"].high)
DEFAULT_FRAMES = VIDEO_NATIVE.num_frames  # what AnimateDiff motion modules were trained on
DEFAULT_SIDE = VIDEO_NATIVE.side or 512
DEFAULT_FPS = 8
DEFAULT_STEPS = VIDEO_NATIVE.steps
DEFAULT_GUIDANCE = VIDEO_NATIVE.guidance_scale
DEFAULT_SCHEDULER = "ddim"
DEFAULT_IMAGE_STRENGTH = 0.8  # a still needs room to move
DEFAULT_VIDEO_STRENGTH = 0.6
CONTEXT_LENGTH, CONTEXT_STRIDE = 16, 4


@dataclass(frozen=True)
class VideoParams(SamplingParams):
    """One request. ``None`` means the default: the input's size or 512, 16 frames (an init video:
    its length, at most 64), DDIM, strength 0.8 for an image and 0.6 for a video. LoRAs go on the
    base UNet's layers under the motion modules."""

    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    num_frames: int | None = None
    init_video: list[Image.Image] | None = None
    prompt_schedule: dict[int, str] = field(default_factory=dict)

    @property
    def task(self) -> Task:
        if self.init_video is not None:
            return Task.VID2VID
        return Task.IMG2VID if self.init_image is not None else Task.TXT2VID


@dataclass(frozen=True)
class VideoOutput:
    frames: list[Image.Image]
    params: VideoParams  # every default resolved
    steps_run: int
    context_length: int  # 0: the clip was denoised whole
    context_stride: int
    decode_chunk_size: int
    low_memory_retry: bool
    denoise_seconds: float
    decode_seconds: float


def _default_size(params: VideoParams) -> tuple[int, int]:
    source = params.init_image if params.init_image is not None else (params.init_video or [None])[0]
    if source is None:
        return DEFAULT_SIDE, DEFAULT_SIDE
    scale = min(1.0, MAX_SIDE / max(source.size))
    if scale < 1.0:
        source = source.resize((max(1, round(source.width * scale)), max(1, round(source.height * scale))))
    width, height = snap_size(source)
    return max(MIN_SIDE, width), max(MIN_SIDE, height)


def default_strength(task: Task) -> float | None:
    if task is Task.TXT2VID:
        return None
    return DEFAULT_VIDEO_STRENGTH if task is Task.VID2VID else DEFAULT_IMAGE_STRENGTH


def resolve_video_params(params: VideoParams) -> VideoParams:
    """``params`` with what was left unset filled in: the input's size (or 512), the init video's
    length (at most 64) or 16 frames, DDIM, the task's strength. Nothing is checked here: the service
    checked the request at admission against ``servers.diffusion.params``."""
    default_width, default_height = _default_size(params)
    num_frames = params.num_frames
    if num_frames is None:
        num_frames = min(len(params.init_video), MAX_FRAMES) if params.init_video is not None else DEFAULT_FRAMES
    return replace(
        params,
        width=params.width if params.width is not None else default_width,
        height=params.height if params.height is not None else default_height,
        num_frames=num_frames,
        scheduler=params.scheduler or DEFAULT_SCHEDULER,
        strength=params.strength if params.strength is not None else default_strength(params.task),
        prompt_schedule=dict(sorted(params.prompt_schedule.items())),
    )


# -- pipeline configuration for one job ----------------------------------------------------------
def _motion_blocks(pipe: DiffusionPipeline) -> list[Any]:
    unet = pipe.unet
    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    return [block for block in blocks if getattr(block, "motion_modules", None) is not None]


@contextmanager
def context_windows(pipe: DiffusionPipeline, num_frames: int, scheduled: bool) -> Iterator[tuple[int, int]]:
    """FreeNoise sliding windows for long clips (and prompt travel); yields (length, stride), (0, 0)
    when the clip is denoised whole. Undone on exit: the pipeline serves other jobs next."""
    if num_frames <= CONTEXT_LENGTH and not scheduled:
        yield 0, 0
        return
    length = min(CONTEXT_LENGTH, num_frames)
    pipe.enable_free_noise(context_length=length, context_stride=CONTEXT_STRIDE)
    try:
        yield length, CONTEXT_STRIDE
    finally:
        # diffusers' disable_free_noise also visits a mid block without motion modules (v3): not used.
        pipe._free_noise_context_length = None
        for block in _motion_blocks(pipe):
            pipe._disable_free_noise_in_block(block)


def _unwrap_split_inference(module: torch.nn.Module) -> None:
    from diffusers.pipelines.free_noise_utils import SplitInferenceModule

    for name, child in list(module.named_children()):
        if isinstance(child, SplitInferenceModule):
            setattr(module, name, child.module)
            child = child.module
        _unwrap_split_inference(child)


@contextmanager
def low_memory(pipe: DiffusionPipeline, windowed: bool) -> Iterator[None]:
    """The lower-memory configuration: chunked feed-forward, and for windowed clips FreeNoise split
    inference (the spatial layers run a window of frames at a time). Undone on exit."""
    pipe.unet.enable_forward_chunking(chunk_size=1, dim=1)
    if windowed:  # after enable_free_noise: it only converts unwrapped transformer blocks
        pipe.enable_free_noise_split_inference(spatial_split_size=256, temporal_split_size=CONTEXT_LENGTH)
    try:
        yield
    finally:
        if windowed:
            _unwrap_split_inference(pipe.unet)
        pipe.unet.disable_forward_chunking()


# -- one run ---------------------------------------------------------------------------------------
def _call_arguments(params: VideoParams, callback: StepCallback) -> dict[str, Any]:
    prompt: str | dict[int, str] = params.prompt
    if params.prompt_schedule:
        prompt = {0: params.prompt, **params.prompt_schedule}
    call: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": params.negative_prompt or None,
        "num_inference_steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "generator": torch.Generator(device="cpu").manual_seed(params.seed),
        "width": params.width,
        "height": params.height,
        "callback_on_step_end": callback,
        "callback_on_step_end_tensor_inputs": ["latents"],
        "output_type": "latent",
    }
    assert params.width is not None and params.height is not None and params.num_frames is not None
    if params.task is Task.TXT2VID:
        call["num_frames"] = params.num_frames
    else:
        source = [params.init_image] * params.num_frames if params.init_video is None else params.init_video
        call["video"] = [[fit_image(frame, params.width, params.height) for frame in source[: params.num_frames]]]
        call["strength"] = params.strength
    return call


def decode_frames(
    pipe: DiffusionPipeline, latents: torch.Tensor, chunk_size: int, reporter: Reporter, total_steps: int
) -> list[Image.Image]:
    """VAE-decode video latents (B=1, C, F, h, w) ``chunk_size`` frames at a time, reporting each chunk."""
    vae = pipe.vae
    _, channels, frames, height, width = latents.shape
    flat = (latents / vae.config.scaling_factor).permute(0, 2, 1, 3, 4).reshape(frames, channels, height, width)
    images: list[Image.Image] = []
    reporter.output(StageChanged("decoding", 0, frames), total_steps, total_steps)
    for start in range(0, frames, chunk_size):
        reporter.check_cancelled()
        with torch.inference_mode():
            decoded = vae.decode(flat[start : start + chunk_size].to(vae.dtype)).sample
        images.extend(pipe.video_processor.postprocess(decoded.float(), output_type="pil"))
        reporter.output(StageChanged("decoding", len(images), frames), total_steps, total_steps)
    return images


def _run(
    model: LoadedModel, params: VideoParams, reporter: Reporter, *, decode_chunk_size: int, low: bool
) -> VideoOutput:
    pipe = model.pipeline(params.task)
    callback = StepCallback(reporter, model.family, preview_every=params.preview_every, total_steps=params.steps)
    call = _call_arguments(params, callback)
    own_scheduler = pipe.scheduler
    started = time.monotonic()
    with ExitStack() as stack:
        length, stride = stack.enter_context(
            context_windows(pipe, params.num_frames or 0, bool(params.prompt_schedule))
        )
        if low:
            stack.enter_context(low_memory(pipe, windowed=length > 0))
        pipe.scheduler = make_scheduler(params.scheduler or DEFAULT_SCHEDULER, own_scheduler.config)
        try:
            latents = pipe(**call).frames
        finally:
            pipe.scheduler = own_scheduler
        denoised = time.monotonic()
        total = callback.steps_done
        frames = decode_frames(pipe, latents, 1 if low else decode_chunk_size, reporter, total)
    ended = time.monotonic()
    return VideoOutput(
        frames=frames,
        params=params,
        steps_run=callback.steps_done,
        context_length=length,
        context_stride=stride,
        decode_chunk_size=1 if low else decode_chunk_size,
        low_memory_retry=False,
        denoise_seconds=denoised - started,
        decode_seconds=ended - denoised,
    )


def animate(model: LoadedModel, params: VideoParams, reporter: Reporter, *, decode_chunk_size: int = 2) -> VideoOutput:
    """Resolve ``params``, run the model's AnimateDiff pipeline for the task, decode the frames.

    Raises ``genmesh.errors.Cancelled`` (from ``reporter.check_cancelled()``) between steps or
    decoded chunks: nothing more is decoded. Out of device memory: one retry in the lower-memory
    configuration, then ``ResourceExhausted`` with advice; the model stays usable either way.
    """
    params = resolve_video_params(params)
    with out_of_memory_guard(model.device, model.memory_mode, VIDEO_ADVICE):
        model.loras.activate(model.pipeline(model.root_task), params.loras)
    low = model.memory_mode is MemoryMode.LOW_VRAM
    if not low:
        failure = None
        try:
            return _run(model, params, reporter, decode_chunk_size=decode_chunk_size, low=False)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        # Outside the except block, so the failed attempt's tensors can be freed.
        free_device_memory(model.device)
        log.warning("out_of_memory_retrying_low_memory", device=str(model.device), error=failure)
    with out_of_memory_guard(model.device, model.memory_mode, VIDEO_ADVICE):
        output = _run(model, params, reporter, decode_chunk_size=decode_chunk_size, low=True)
    return replace(output, low_memory_retry=not low)
