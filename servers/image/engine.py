"""Image generation on diffusers: model cache, generation, nothing about grpc or storage."""

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
from servers.diffusion.catalog import CatalogEntry, ModelCatalog
from servers.diffusion.compiled import Shape, compile_model, warm_up_image
from servers.diffusion.families import ModelFamily
from servers.diffusion.generate import GenerationParams, GenerationResult, generate, resolve_params
from servers.diffusion.loading import LoadedModel, load_model
from servers.diffusion.lora import DEFAULT_BUDGET_BYTES, LoraAdapters, LoraCatalog, ResolvedLora, check_family
from servers.diffusion.sources import SourceKind, detect_folder_family, detect_single_file_family
from servers.image.types import ImageRequest
from servers.runtime.events import Reporter, StageChanged
from servers.runtime.model_cache import ModelCache

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ImageOutcome:
    result: GenerationResult
    model: CatalogEntry
    family: str
    memory_mode: str
    device: str
    load_seconds: float


class ImageEngine:
    """One loaded model per device at a time, unloaded after ``keep_alive_seconds`` idle."""

    def __init__(
        self,
        catalog: ModelCatalog,
        *,
        cache_dir: Path,
        device: str = "auto",
        memory_mode: str = "auto",
        keep_alive_seconds: float = 600.0,
        threads: int = 2,
        max_pixels: int = 4 * 1024 * 1024,
        compile: CompileOptions = OFF,
        compile_warmup: tuple[Shape, ...] = (),
        loras: LoraCatalog | None = None,
        lora_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        configure_threads(threads)
        self.catalog = catalog
        self.loras = loras or LoraCatalog(catalog.models_dir.parent / "lora")
        self.lora_budget_bytes = lora_budget_bytes
        self.cache_dir = cache_dir
        self.device = select_device(device)
        self.memory_mode = memory_mode
        self.max_pixels = max_pixels
        self.compile = compile
        self.compile_warmup = compile_warmup
        self.models: ModelCache[LoadedModel] = ModelCache(
            self._load, keep_alive_seconds=keep_alive_seconds, unload=self._unload
        )

    @property
    def device_label(self) -> str:
        return device_label(self.device)

    def _load(self, name: str) -> LoadedModel:
        entry = self.catalog.local(self.catalog.resolve(name))
        model = load_model(entry.source, cache_dir=self.cache_dir, device=self.device, memory_mode=self.memory_mode)
        model.loras = LoraAdapters(self.lora_budget_bytes)
        if self.compile.enabled:  # off: not one step differs from an eager server
            side = self.defaults_for(entry).side  # warm up at the size requests get by default
            warm_up_image(model, compile_model(model, self.compile), self.compile_warmup, side=side)
        return model

    def _unload(self, model: LoadedModel) -> None:
        del model
        free_device_memory(self.device)

    def preload(self, name: str = "") -> None:
        with self.models.use(self.catalog.resolve(name).name):
            pass

    def family_of(self, entry: CatalogEntry) -> ModelFamily:
        """A model's family without loading it: declared, or read from its folder's index or its
        checkpoint's header (``InvalidArgument`` naming ``model`` when it is not SD1.5/SDXL)."""
        if entry.source.family is not None:
            return entry.source.family
        path = Path(entry.source.location)
        if entry.source.kind is SourceKind.SINGLE_FILE:
            return detect_single_file_family(path)
        return detect_folder_family(path)

    def defaults_for(self, entry: CatalogEntry) -> spec.Defaults:
        """What unset fields get with this model here: its native defaults, or light ones for the
        smoke-test model or a CPU (``servers.diffusion.params``)."""
        return spec.image_defaults(smoke_test=entry.smoke_test, cpu=self.device.type == "cpu")

    def resolve_loras(self, request: ImageRequest, entry: CatalogEntry) -> tuple[ResolvedLora, ...]:
        """The request's LoRAs found, read and checked against the model's family (no loading):
        ``NotFound`` / ``InvalidArgument`` naming ``loras[i].name``."""
        if not request.loras:
            return ()
        return self.loras.resolve(request.loras, self.family_of(entry), model_name=entry.name)

    def generate(
        self,
        request: ImageRequest,
        init_image: Image.Image | None,
        reporter: Reporter,
        *,
        mask_image: Image.Image | None = None,
        loras: tuple[ResolvedLora, ...] = (),
    ) -> ImageOutcome:
        entry = self.catalog.resolve(request.model)
        if not self.models.is_loaded(entry.name):
            reporter.output(StageChanged("loading_model"))
        with self.models.use(entry.name, request.keep_alive_seconds) as model:
            load_seconds = self.models.last_load_seconds
            params = GenerationParams(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                width=request.width,
                height=request.height,
                steps=request.steps or spec.IMAGE_NATIVE.steps,  # filled at admission (ImageJob.prepare)
                guidance_scale=spec.IMAGE_NATIVE.guidance_scale
                if request.guidance_scale is None
                else request.guidance_scale,
                seed=request.seed if request.seed is not None else secrets.randbits(32),
                scheduler=request.scheduler,
                num_images=request.num_images,
                strength=request.strength,
                init_image=init_image,
                preview_every=request.preview_interval_steps,
                mask_image=mask_image,
                loras=loras,
            )
            check_family(loras, model.family, entry.name)  # a folder's family is only certain once loaded
            resolved = resolve_params(params, model.family, model.default_scheduler)
            check_pixel_budget(resolved.width or 0, resolved.height or 0, resolved.num_images, self.max_pixels)
            reporter.output(StageChanged("denoising"))
            shape = {"width": resolved.width, "height": resolved.height, "num_images": resolved.num_images}
            with logging_request_compiles(self.compile, **shape):
                result = generate(model, resolved, reporter)
            return ImageOutcome(
                result=result,
                model=entry,
                family=str(model.family),
                memory_mode=str(model.memory_mode),
                device=device_label(model.device),
                load_seconds=load_seconds,
            )

    def close(self) -> None:
        self.models.close()


def check_pixel_budget(width: int, height: int, num_images: int, max_pixels: int) -> None:
    """The most pixels one job may make on this server (``GENMESH_IMAGE_MAX_PIXELS``). Checked before
    queueing (``ImageJob.prepare``) and again once the model's family fixes unset sides."""
    pixels = width * height * num_images
    if pixels > max_pixels:
        raise InvalidArgument(
            f"num_images: width x height x num_images is {pixels} pixels; this server allows at most "
            f"{max_pixels} per job (use fewer or smaller images)",
            field="num_images",
        )
