"""Video generation on diffusers (AnimateDiff): model cache and generation, nothing about grpc or storage."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import structlog
from PIL import Image

from genmesh.errors import InvalidArgument
from servers.compute.compile import OFF, CompileOptions, logging_request_compiles
from servers.compute.devices import configure_threads, device_label, select_device
from servers.compute.memory import free_device_memory
from servers.diffusion import params as spec
from servers.diffusion.animate import (
    VideoOutput,
    VideoParams,
    animate,
    resolve_video_params,
)
from servers.diffusion.catalog import CatalogEntry, ModelCatalog
from servers.diffusion.compiled import Shape, compile_model, warm_up_video
from servers.diffusion.families import ModelFamily
from servers.diffusion.loading import LoadedModel, load_model
from servers.diffusion.lora import DEFAULT_BUDGET_BYTES, LoraAdapters, LoraCatalog, ResolvedLora
from servers.runtime.events import Reporter, StageChanged
from servers.runtime.model_cache import ModelCache
from servers.video.types import VideoRequest

log = structlog.get_logger(__name__)
_PAIR = "\x1f"  # joins a base model and a motion adapter into one cache key


@dataclass(frozen=True)
class VideoOutcome:
    output: VideoOutput
    model: CatalogEntry
    motion_adapter: CatalogEntry
    memory_mode: str
    device: str
    load_seconds: float


class VideoEngine:
    """One (base model, motion adapter) pair loaded per device, unloaded after ``keep_alive_seconds`` idle."""

    def __init__(
        self,
        models: ModelCatalog,
        adapters: ModelCatalog,
        *,
        cache_dir: Path,
        device: str = "auto",
        memory_mode: str = "auto",
        keep_alive_seconds: float = 600.0,
        threads: int = 2,
        decode_chunk_size: int = 2,
        max_pixels: int = 64 * 512 * 512,
        compile: CompileOptions = OFF,
        compile_warmup: tuple[Shape, ...] = (),
        loras: LoraCatalog | None = None,
        lora_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        configure_threads(threads)
        self.loras = loras or LoraCatalog(models.models_dir.parent / "lora")
        self.lora_budget_bytes = lora_budget_bytes
        if decode_chunk_size < 1:
            raise InvalidArgument(f"decode_chunk_size must be at least 1 (got {decode_chunk_size})")
        self.catalog = models
        self.adapters = adapters
        self.cache_dir = cache_dir
        self.device = select_device(device)
        self.memory_mode = memory_mode
        self.decode_chunk_size = decode_chunk_size
        self.max_pixels = max_pixels
        self.compile = compile
        self.compile_warmup = compile_warmup
        self.models: ModelCache[LoadedModel] = ModelCache(
            self._load, keep_alive_seconds=keep_alive_seconds, unload=self._unload
        )

    @property
    def device_label(self) -> str:
        return device_label(self.device)

    def resolve(self, model: str, motion_adapter: str) -> tuple[CatalogEntry, CatalogEntry]:
        """Both entries, or ``NotFound`` naming ``model`` / ``motion_adapter`` (no loading)."""
        return self.catalog.resolve(model), self.adapters.resolve(motion_adapter)

    def _load(self, key: str) -> LoadedModel:
        model_name, adapter_name = key.split(_PAIR)
        model, adapter = self.resolve(model_name, adapter_name)
        model, adapter = self.catalog.local(model), self.adapters.local(adapter)
        loaded = load_model(
            model.source, cache_dir=self.cache_dir, device=self.device, memory_mode=self.memory_mode,
            motion_adapter=adapter.source,
        )  # fmt: skip
        loaded.loras = LoraAdapters(self.lora_budget_bytes)
        if self.compile.enabled:  # off: not one step differs from an eager server
            modules = compile_model(loaded, self.compile)
            defaults = self.defaults_for(model)  # warm up at the size and length requests get by default
            warm_up_video(loaded, modules, self.compile_warmup, decode_chunk_size=self.decode_chunk_size,
                          side=defaults.side, frames=defaults.num_frames)  # fmt: skip
        return loaded

    def _unload(self, model: LoadedModel) -> None:
        del model
        free_device_memory(self.device)

    def is_loaded(self, model: str, motion_adapter: str) -> bool:
        return self.models.is_loaded(f"{model}{_PAIR}{motion_adapter}")

    def loaded_names(self) -> tuple[str, str] | None:
        key = self.models.loaded_name
        return tuple(key.split(_PAIR)) if key else None  # type: ignore[return-value]

    def preload(self) -> None:
        model, adapter = self.resolve("", "")
        with self.models.use(f"{model.name}{_PAIR}{adapter.name}"):
            pass

    def resolve_loras(self, request: VideoRequest) -> tuple[ResolvedLora, ...]:
        """The request's LoRAs found, read and checked: the base models here are SD1.5 (AnimateDiff);
        ``NotFound`` / ``InvalidArgument`` naming ``loras[i].name``."""
        if not request.loras:
            return ()
        model = self.catalog.resolve(request.model)
        return self.loras.resolve(request.loras, ModelFamily.SD15, model_name=model.name)

    def defaults_for(self, entry: CatalogEntry) -> spec.Defaults:
        """What unset fields get with this base model here: native defaults, or light ones for the
        smoke-test model or a CPU (``servers.diffusion.params``)."""
        return spec.video_defaults(smoke_test=entry.smoke_test, cpu=self.device.type == "cpu")

    def params_for(
        self,
        request: VideoRequest,
        init_image: Image.Image | None,
        init_video: list[Image.Image] | None,
        loras: tuple[ResolvedLora, ...] = (),
    ) -> tuple[VideoParams, str]:
        """The run's parameters (seed chosen, defaults filled for this model and device) and the
        defaults' note when a light default was used. The rules that need the defaults or the init
        media, and the server's pixel budget, are checked here, at admission: ``InvalidArgument``
        naming the field, before any queueing."""
        defaults = self.defaults_for(self.catalog.resolve(request.model))
        source = init_image if init_image is not None else (init_video or [None])[0]
        width: int | None
        height: int | None
        if source is None:
            width = height = defaults.side
        elif defaults.note and defaults.side:  # light defaults: the input's size, fitted within theirs
            width, height = spec.fit_within(*source.size, defaults.side)
        else:  # the input's own size (resolve_video_params)
            width = height = None
        frames = None if init_video is not None else defaults.num_frames  # else the init video's length
        params = resolve_video_params(
            VideoParams(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                width=request.width or width,
                height=request.height or height,
                num_frames=request.num_frames or frames,
                steps=request.steps or defaults.steps,
                guidance_scale=defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale,
                seed=request.seed if request.seed is not None else secrets.randbits(32),
                scheduler=request.scheduler,
                strength=request.strength,
                init_image=init_image,
                init_video=init_video,
                prompt_schedule=dict(request.prompt_schedule),
                preview_every=request.preview_interval_steps,
                loras=loras,
            )
        )
        assert params.num_frames is not None
        spec.check_steps_strength(params.steps, params.strength)
        spec.check_video_frames(params.num_frames, params.prompt_schedule, len(init_video) if init_video else None)
        pixels = (params.width or 0) * (params.height or 0) * params.num_frames
        if pixels > self.max_pixels:
            raise InvalidArgument(
                f"num_frames: width x height x num_frames is {pixels} pixels; this server allows at most "
                f"{self.max_pixels} per job (use fewer frames or a smaller size)",
                field="num_frames",
            )
        sized = width is not None and not (request.width and request.height)
        note = defaults.note_for(
            size=(params.width, params.height) if sized else None,  # type: ignore[arg-type]
            frames=params.num_frames if frames and request.num_frames is None else None,
            steps=params.steps if request.steps is None else None,
        )
        return params, note

    def generate(self, request: VideoRequest, params: VideoParams, reporter: Reporter) -> VideoOutcome:
        model_entry, adapter_entry = self.resolve(request.model, request.motion_adapter)
        key = f"{model_entry.name}{_PAIR}{adapter_entry.name}"
        if not self.models.is_loaded(key):
            reporter.output(StageChanged("loading_model"))
        with self.models.use(key, request.keep_alive_seconds) as model:
            load_seconds = self.models.last_load_seconds
            reporter.output(StageChanged("denoising"))
            shape = {"width": params.width, "height": params.height, "num_frames": params.num_frames}
            with logging_request_compiles(self.compile, **shape):
                output = animate(model, params, reporter, decode_chunk_size=self.decode_chunk_size)
            return VideoOutcome(
                output=output,
                model=model_entry,
                motion_adapter=adapter_entry,
                memory_mode=str(model.memory_mode),
                device=device_label(model.device),
                load_seconds=load_seconds,
            )

    def close(self) -> None:
        self.models.close()
