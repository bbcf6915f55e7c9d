"""Loading a model from its source (``servers.diffusion.sources``) into a ready pipeline, offline.

Loading never touches the network: every path must exist before diffusers sees it (a missing
folder would otherwise be taken for a hub repository id), every call passes ``local_files_only``,
and single files always get ``config=`` (a local config folder derived from the checkpoint's
shapes, ``checkpoint_config``; without it diffusers fetches one from the hub even with
``local_files_only``). Servers also set ``HF_HUB_OFFLINE=1`` in their environment before importing
this package, as a second guard.

One load serves every task: :meth:`LoadedModel.pipeline` derives the img2img pipeline from the
txt2img one's components (``from_pipe``: shared weights, no second load). Loaded with a motion
adapter, the model serves the video tasks instead: the base UNet becomes AnimateDiff's motion UNet
(the 2D UNet is dropped, so the weights are held once) and the scheduler is set up as AnimateDiff
needs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import torch

from genmesh.errors import InvalidArgument, NotFound
from servers.compute.devices import default_dtype, select_device
from servers.diffusion.builtin import builtin_folder
from servers.diffusion.checkpoint_config import checkpoint_config_folder
from servers.diffusion.detect import INPAINTING_CHANNELS
from servers.diffusion.families import FamilySpec, ModelFamily, Task, family_spec
from servers.diffusion.lora import LoraAdapters
from servers.diffusion.memory import MemoryMode, apply_memory_mode, out_of_memory_guard, resolve_memory_mode
from servers.diffusion.motion import FIELD as MOTION_FIELD
from servers.diffusion.motion import animatediff_scheduler_config, check_fits, load_motion_adapter
from servers.diffusion.schedulers import make_scheduler, scheduler_name
from servers.diffusion.sources import (
    FIELD,
    ModelSource,
    SourceKind,
    detect_folder_family,
    detect_single_file_family,
    read_checkpoint_shapes,
)

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

log = structlog.get_logger(__name__)


def family_of(pipe: DiffusionPipeline) -> ModelFamily:
    return ModelFamily.SDXL if "text_encoder_2" in pipe.components else ModelFamily.SD15


def _existing(path: str, what: str) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise NotFound(f"{FIELD}: no {what} at {path}")
    return resolved


def _pipeline_class(family: ModelFamily, task: Task) -> type[DiffusionPipeline]:
    import diffusers

    return getattr(diffusers, family_spec(family).pipelines[task])


def _quiet_progress_bars() -> None:
    """Servers log structured lines; the libraries' tqdm bars would only clutter stderr."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _read_pipeline(source: ModelSource, family: ModelFamily, dtype: torch.dtype, cache_dir: Path) -> DiffusionPipeline:
    cls = _pipeline_class(family, Task.TXT2IMG)
    extra: dict[str, Any] = {}
    if family is ModelFamily.SD15:
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if source.kind is SourceKind.SINGLE_FILE:
        path = Path(source.location)
        config_dir = source.config_dir or checkpoint_config_folder(
            read_checkpoint_shapes(path), family, cache_dir, where=path.name
        )
        _existing(str(config_dir), "config folder")
        return cls.from_single_file(
            source.location, config=str(config_dir), dtype=dtype, local_files_only=True, **extra
        )
    folder = builtin_folder(source.location, cache_dir) if source.kind is SourceKind.BUILTIN else Path(source.location)
    return cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True, **extra)


@dataclass
class LoadedModel:
    """A loaded model placed on its device, and the task pipelines derived from it."""

    source: ModelSource
    family: ModelFamily
    device: torch.device
    dtype: torch.dtype
    memory_mode: MemoryMode  # as resolved: full or lowvram
    load_seconds: float
    default_scheduler: str
    _pipelines: dict[Task, DiffusionPipeline] = field(default_factory=dict, repr=False)
    root_task: Task = Task.TXT2IMG  # the task of the loaded pipeline; the others derive from it
    motion_adapter: ModelSource | None = None
    loras: LoraAdapters = field(default_factory=LoraAdapters)  # switched per request on the shared modules

    @property
    def inpainting(self) -> bool:
        """A 9-channel inpainting UNet: every image task runs through the inpainting pipeline."""
        return self._pipelines[self.root_task].unet.config.in_channels == INPAINTING_CHANNELS

    def pipeline(self, task: Task | str = Task.TXT2IMG) -> DiffusionPipeline:
        """The pipeline for ``task``, sharing the loaded pipeline's components."""
        task = Task(task)
        if task.video != self.root_task.video:
            needs = "a model loaded with a motion adapter" if task.video else "a model loaded without one"
            raise InvalidArgument(f"{FIELD}: task {task.value} needs {needs}", field=FIELD)
        if task not in family_spec(self.family).pipelines:
            raise InvalidArgument(f"{FIELD}: {self.family.value} models cannot run {task.value}", field=FIELD)
        if task not in self._pipelines:
            base = self._pipelines[self.root_task]
            # from_pipe casts the shared modules to its dtype (float32 unless told): pass ours.
            derived = _pipeline_class(self.family, task).from_pipe(base, dtype=self.dtype)
            derived.set_progress_bar_config(disable=True)
            if self.memory_mode is MemoryMode.LOW_VRAM and self.device.type == "cuda":
                # Offload hooks live on the shared modules; the derived pipeline re-installs its own.
                derived.enable_model_cpu_offload(device=self.device)
            self._pipelines[task] = derived
        return self._pipelines[task]


def _animate(
    pipe: DiffusionPipeline,
    adapter_source: ModelSource,
    spec: FamilySpec,
    dtype: torch.dtype,
    cache_dir: Path,
    model_name: str,
) -> DiffusionPipeline:
    """The AnimateDiff text-to-video pipeline built from a loaded base pipeline and a motion adapter."""

    if Task.TXT2VID not in spec.pipelines:
        raise InvalidArgument(
            f"{MOTION_FIELD}: {spec.family.value} models have no AnimateDiff support here (use an SD1.5 model)",
            field=MOTION_FIELD,
        )
    adapter = load_motion_adapter(adapter_source, cache_dir=cache_dir, dtype=dtype)
    check_fits(adapter, pipe.unet.config, adapter_name=str(adapter_source), model_name=model_name)
    scheduler = make_scheduler("ddim", animatediff_scheduler_config(pipe.scheduler.config))
    keep = ("vae", "text_encoder", "tokenizer", "feature_extractor", "image_encoder")
    components = {name: pipe.components.get(name) for name in keep}
    # The constructor turns the 2D UNet into a motion UNet (a copy); the 2D one goes with `pipe`.
    video = _pipeline_class(spec.family, Task.TXT2VID)(
        **components, unet=pipe.unet, motion_adapter=adapter, scheduler=scheduler
    )
    if video.unet.dtype != dtype:  # from_unet2d builds the motion UNet in float32
        video.unet.to(dtype=dtype)
    video.vae.enable_slicing()  # a chunk of frames decodes one frame at a time: memory stays flat
    return video


def load_model(
    source: ModelSource,
    *,
    cache_dir: Path,
    device: torch.device | str = "auto",
    dtype: torch.dtype | None = None,
    memory_mode: MemoryMode | str = MemoryMode.AUTO,
    motion_adapter: ModelSource | None = None,
) -> LoadedModel:
    """Load ``source`` offline and place it on ``device`` in ``memory_mode``; with ``motion_adapter``
    the model runs the video tasks (AnimateDiff) instead of the image ones.

    ``cache_dir`` holds built-in models and config folders made on first use. ``dtype`` None: fp16
    on a GPU, fp32 on the CPU. Errors: ``NotFound`` (no such path or built-in name),
    ``InvalidArgument`` naming ``model`` (not an SD1.5/SDXL model) or ``motion_adapter`` (not one,
    or one that does not fit the model), ``ResourceExhausted`` (the device ran out of memory while
    the weights moved to it).
    """
    started = time.monotonic()
    device = select_device(device) if isinstance(device, str) else device
    dtype = dtype or default_dtype(device)
    cache_dir = Path(cache_dir)
    if source.kind is SourceKind.BUILTIN:
        family = ModelFamily.SD15
    elif source.kind is SourceKind.SINGLE_FILE:
        path = _existing(source.location, "checkpoint file")
        family = source.family or detect_single_file_family(path)
    else:
        path = _existing(source.location, "diffusers folder")
        family = source.family or detect_folder_family(path)
    spec = family_spec(family)
    _quiet_progress_bars()
    pipe = _read_pipeline(source, family, dtype, cache_dir)
    root_task, min_free = Task.TXT2IMG, spec.full_mode_min_free_bytes
    if motion_adapter is not None:
        pipe = _animate(pipe, motion_adapter, spec, dtype, cache_dir, Path(source.location).stem or str(source))
        root_task, min_free = Task.TXT2VID, spec.video_full_mode_min_free_bytes
    pipe.set_progress_bar_config(disable=True)
    if scheduler_name(pipe.scheduler) is None:
        log.info(
            "scheduler_replaced", model=str(source), found=type(pipe.scheduler).__name__, used=spec.default_scheduler
        )
        pipe.scheduler = make_scheduler(spec.default_scheduler, pipe.scheduler.config)
    mode = resolve_memory_mode(memory_mode, device, full_mode_min_free_bytes=min_free)
    with out_of_memory_guard(device, mode):
        apply_memory_mode(pipe, mode, device)
    loaded = LoadedModel(
        source=source,
        family=family,
        device=device,
        dtype=dtype,
        memory_mode=mode,
        load_seconds=time.monotonic() - started,
        default_scheduler=scheduler_name(pipe.scheduler) or spec.default_scheduler,
        _pipelines={root_task: pipe},
        root_task=root_task,
        motion_adapter=motion_adapter,
    )
    log.info(
        "model_loaded",
        model=str(source),
        motion_adapter=str(motion_adapter) if motion_adapter else None,
        family=family.value,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        memory_mode=mode.value,
        seconds=round(loaded.load_seconds, 3),
    )
    return loaded
