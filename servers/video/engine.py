"""Video generation on diffusers (AnimateDiff): model cache and generation, nothing about grpc or storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog
from PIL import Image

from genmesh.errors import InvalidArgument
from servers.compute.compile import logging_request_compiles
from servers.diffusion import params as spec
from servers.diffusion.animate import (
    VideoOutput,
    VideoParams,
    animate,
    resolve_video_params,
)
from servers.diffusion.catalog import CatalogEntry, ModelCatalog
from servers.diffusion.compiled import compile_model, warm_up_video
from servers.diffusion.engine import DiffusionEngine, Loaded
from servers.diffusion.families import ModelFamily
from servers.diffusion.loading import LoadedModel
from servers.diffusion.lora import ResolvedLora
from servers.runtime.events import Reporter, StageChanged
from servers.video.types import VideoRequest

log = structlog.get_logger(__name__)


class ModelPair(NamedTuple):
    """What a video job runs: a base model and a motion adapter, by name."""

    model: str
    motion_adapter: str


@dataclass(frozen=True)
class VideoOutcome:
    output: VideoOutput
    model: CatalogEntry
    motion_adapter: CatalogEntry
    loaded: Loaded


class VideoEngine(DiffusionEngine[ModelPair]):
    """AnimateDiff on SD1.5 base models: one (base model, motion adapter) pair loaded at a time."""

    DEFAULT_MAX_PIXELS = 64 * 512 * 512

    def __init__(
        self, models: ModelCatalog, adapters: ModelCatalog, *, decode_chunk_size: int = 2, **options: Any
    ) -> None:
        if decode_chunk_size < 1:
            raise InvalidArgument(f"decode_chunk_size must be at least 1 (got {decode_chunk_size})")
        super().__init__(models, **options)
        self.adapters = adapters
        self.decode_chunk_size = decode_chunk_size

    def resolve(self, model: str, motion_adapter: str) -> tuple[CatalogEntry, CatalogEntry]:
        """Both entries, or ``NotFound`` naming ``model`` / ``motion_adapter`` (no loading)."""
        return self.catalog.resolve(model), self.adapters.resolve(motion_adapter)

    def _load(self, pair: ModelPair) -> LoadedModel:
        model, adapter = self.resolve(*pair)
        model, adapter = self.catalog.local(model), self.adapters.local(adapter)
        loaded = self.load_entry(model, motion_adapter=adapter.source)
        if self.compile.enabled:  # off: not one step differs from an eager server
            modules = compile_model(loaded, self.compile)
            defaults = self.defaults_for(model)  # warm up at the size and length requests get by default
            warm_up_video(loaded, modules, self.compile_warmup, decode_chunk_size=self.decode_chunk_size,
                          side=defaults.side, frames=defaults.num_frames)  # fmt: skip
        return loaded

    def preload(self) -> None:
        model, adapter = self.resolve("", "")
        with self.models.use(ModelPair(model.name, adapter.name)):
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
                **self.sampling(request, defaults),
                width=request.width or width,
                height=request.height or height,
                num_frames=request.num_frames or frames,
                init_image=init_image,
                init_video=init_video,
                prompt_schedule=dict(request.prompt_schedule),
                loras=loras,
            )
        )
        assert params.num_frames is not None
        spec.check_steps_strength(params.steps, params.strength)
        spec.check_video_frames(params.num_frames, params.prompt_schedule, len(init_video) if init_video else None)
        spec.check_pixel_budget(params.width or 0, params.height or 0, params.num_frames, self.max_pixels,
                                "num_frames", "use fewer frames or a smaller size")  # fmt: skip
        sized = width is not None and not (request.width and request.height)
        note = defaults.note_for(
            size=(params.width, params.height) if sized else None,  # type: ignore[arg-type]
            frames=params.num_frames if frames and request.num_frames is None else None,
            steps=params.steps if request.steps is None else None,
        )
        return params, note

    def generate(self, request: VideoRequest, params: VideoParams, reporter: Reporter) -> VideoOutcome:
        model_entry, adapter_entry = self.resolve(request.model, request.motion_adapter)
        pair = ModelPair(model_entry.name, adapter_entry.name)
        with self.using(pair, request.keep_alive_seconds, reporter) as (model, loaded):
            reporter.output(StageChanged("denoising"))
            shape = {"width": params.width, "height": params.height, "num_frames": params.num_frames}
            with logging_request_compiles(self.compile, **shape):
                output = animate(model, params, reporter, decode_chunk_size=self.decode_chunk_size)
            return VideoOutcome(output=output, model=model_entry, motion_adapter=adapter_entry, loaded=loaded)
