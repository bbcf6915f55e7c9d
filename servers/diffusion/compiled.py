"""Compiled diffusion models (opt-in): the denoiser and the VAE decoder under ``torch.compile``,
warmed up through the real generation path before the server says SERVING.

What is compiled: the UNet (AnimateDiff: the motion UNet), which runs at every step, and the
VAE's decoder, which runs once per image or chunk of frames. The text encoder runs once per
request and stays eager. ``lowvram`` models stay eager: model CPU offload moves the weights in
hooks around every call, which a compiled graph cannot hold. On a GPU the image UNet also goes
channels-last (what cuDNN's and inductor's convolutions prefer).

Shapes: the warm-up generates twice (or at the ``compile_warmup`` shapes a server is given). First
at the default size, which gives a graph specialised to it (the common request, the fastest graph).
Then at another size (video: and another frame count): the dimensions that changed become symbolic
(dynamo's automatic dynamic shapes), so that second graph serves every other size and requests do
not wait for a compile because of their size (on the CPU, where the convolution picks its algorithm
by size, a much larger size can add one graph). What still compiles once more at request time (each a
new graph, bounded by ``torch._dynamo.config.recompile_limit``): the first batch of several images,
the first run without classifier-free guidance (guidance_scale <= 1: a batch of one), FreeNoise
context windows (long clips, prompt travel) and the low-memory retry. Schedulers do not: the
denoiser always gets float32 timesteps (see :func:`_float_timestep`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import torch
from torch import nn

from genmesh.errors import InvalidArgument
from servers.compute.compile import CompileOptions, WarmUp, compile_module, warm_up
from servers.diffusion.families import family_spec
from servers.diffusion.memory import MemoryMode
from servers.runtime.events import NULL_REPORTER

if TYPE_CHECKING:
    from servers.diffusion.loading import LoadedModel

log = structlog.get_logger(__name__)

WARM_UP_PROMPT = "warm-up"
WARM_UP_STEPS = 2
VIDEO_SIZE, VIDEO_FRAMES = 512, 16  # the Video server's defaults (servers.diffusion.animate)


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    count: int  # images of a batch, or frames of a clip


def parse_shapes(text: str, *, default_count: int = 1, field: str = "compile_warmup") -> tuple[Shape, ...]:
    """``"512x512,384x320x2"`` (width x height [x images or frames, else ``default_count``],
    comma-separated) -> shapes; empty -> () (the default warm-up). ``InvalidArgument`` naming
    ``field`` otherwise."""
    shapes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        numbers = item.lower().split("x")
        try:
            values = [int(number) for number in numbers]
        except ValueError:
            values = []
        if len(values) not in (2, 3) or min(values) < 1 or values[0] % 8 or values[1] % 8:
            raise InvalidArgument(
                f"{field}: {item!r} is not WIDTHxHEIGHT[xCOUNT] with sides multiples of 8", field=field
            )
        shapes.append(Shape(values[0], values[1], values[2] if len(values) == 3 else default_count))
    return tuple(shapes)


def second_shape(first: Shape, *, vary_count: bool) -> Shape:
    """A shape with another width and height than ``first`` (multiples of 64), and with
    ``vary_count`` another count (half as many frames)."""
    width = max(128, (first.width * 3 // 4) // 64 * 64)
    height = max(128, (first.height * 5 // 8) // 64 * 64)
    return Shape(width, height, max(2, first.count // 2) if vary_count else first.count)


def compiled_modules(model: LoadedModel) -> list[nn.Module]:
    pipe = model.pipeline(model.root_task)
    return [pipe.unet, pipe.vae.decoder]


def compile_model(model: LoadedModel, options: CompileOptions) -> list[nn.Module]:
    """Compile ``model``'s denoiser and VAE decoder in place; [] when off or not compilable."""
    if not options.enabled:
        return []
    if model.memory_mode is MemoryMode.LOW_VRAM:
        log.warning("compile_skipped", reason="lowvram memory mode (CPU offload) runs eagerly")
        return []
    modules = compiled_modules(model)
    denoiser = modules[0]
    if model.device.type == "cuda" and not model.root_task.video:
        denoiser.to(memory_format=torch.channels_last)
    denoiser.register_forward_pre_hook(_float_timestep, with_kwargs=True)
    for module in modules:
        compile_module(module, options)
    return modules


@torch.compiler.disable  # plain Python before the compiled frame; traced, it would be a graph of its own
def _float_timestep(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """Give the denoiser float32 timesteps whatever the scheduler's dtype (DDIM/DPM++ int64, Euler
    float32), so one compiled graph serves every scheduler: a compiled frame guards on its inputs'
    dtypes. Same numbers: the UNet's timestep embedding converts them to float32 first thing.
    (Hooks run before the compiled forward frame: ``nn.Module.compile`` leaves ``_call_impl`` eager.)"""
    if len(args) > 1 and torch.is_tensor(args[1]) and not args[1].is_floating_point():
        return (args[0], args[1].float(), *args[2:]), kwargs
    timestep = kwargs.get("timestep")
    if torch.is_tensor(timestep) and not timestep.is_floating_point():
        return args, {**kwargs, "timestep": timestep.float()}
    return None


def default_image_shapes(model: LoadedModel, side: int | None = None) -> tuple[Shape, ...]:
    """``side``: the server's default size for the model when it is not the family's native one
    (light defaults: servers.diffusion.params)."""
    native = side or family_spec(model.family).native_resolution
    # One image: a batch of one is special to dynamo (sizes 0 and 1 are never symbolic), and most
    # requests are single images; a first batch of several compiles its graph once, at request time.
    first = Shape(native, native, 1)
    return first, second_shape(first, vary_count=False)


def default_video_shapes(side: int | None = None, frames: int | None = None) -> tuple[Shape, ...]:
    first = Shape(side or VIDEO_SIZE, side or VIDEO_SIZE, frames or VIDEO_FRAMES)
    return first, second_shape(first, vary_count=True)


def warm_up_image(
    model: LoadedModel, modules: list[nn.Module], shapes: tuple[Shape, ...] = (), *, side: int | None = None
) -> WarmUp | None:
    """Compile by generating at each of ``shapes`` (default: the default size, ``side`` or the
    family's, then a second size and batch; see the module doc)."""
    from servers.diffusion.generate import GenerationParams, generate

    if not modules:
        return None

    def run() -> None:
        for shape in shapes or default_image_shapes(model, side):
            params = GenerationParams(
                prompt=WARM_UP_PROMPT, width=shape.width, height=shape.height, steps=WARM_UP_STEPS,
                num_images=shape.count,
            )  # fmt: skip
            generate(model, params)

    return warm_up(modules, run, what=f"image model {model.source}")


def warm_up_video(
    model: LoadedModel,
    modules: list[nn.Module],
    shapes: tuple[Shape, ...] = (),
    *,
    decode_chunk_size: int,
    side: int | None = None,
    frames: int | None = None,
) -> WarmUp | None:
    """Compile by animating at each of ``shapes`` (count = frames; default: the default size and
    length, ``side`` and ``frames`` or the native ones, then a second size and length)."""
    from servers.diffusion.animate import VideoParams, animate

    if not modules:
        return None

    def run() -> None:
        for shape in shapes or default_video_shapes(side, frames):
            params = VideoParams(
                prompt=WARM_UP_PROMPT, width=shape.width, height=shape.height, num_frames=shape.count,
                steps=WARM_UP_STEPS,
            )  # fmt: skip
            animate(model, params, NULL_REPORTER, decode_chunk_size=decode_chunk_size)

    return warm_up(modules, run, what=f"video model {model.source} + {model.motion_adapter}")
