"""Image generation on diffusers: model cache, generation, nothing about grpc or storage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog
from PIL import Image

from servers.compute.compile import logging_request_compiles
from servers.diffusion import params as spec
from servers.diffusion.catalog import CatalogEntry
from servers.diffusion.compiled import compile_model, warm_up_image
from servers.diffusion.engine import DiffusionEngine, Loaded
from servers.diffusion.families import ModelFamily
from servers.diffusion.generate import GenerationParams, GenerationResult, generate, resolve_params
from servers.diffusion.loading import LoadedModel
from servers.diffusion.lora import ResolvedLora, check_family
from servers.diffusion.sources import SourceKind, detect_folder_family, detect_single_file_family
from servers.image.types import ImageRequest
from servers.runtime.events import Reporter, StageChanged

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ImageOutcome:
    result: GenerationResult
    model: CatalogEntry
    family: str
    loaded: Loaded


class ImageEngine(DiffusionEngine[str]):
    """SD1.5 / SDXL pipelines, keyed by model name."""

    DEFAULT_MAX_PIXELS = 4 * 1024 * 1024

    def _load(self, name: str) -> LoadedModel:
        entry = self.catalog.local(self.catalog.resolve(name))
        model = self.load_entry(entry)
        if self.compile.enabled:  # off: not one step differs from an eager server
            side = self.defaults_for(entry).side  # warm up at the size requests get by default
            warm_up_image(model, compile_model(model, self.compile), self.compile_warmup, side=side)
        return model

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
        with self.using(entry.name, request.keep_alive_seconds, reporter) as (model, loaded):
            params = GenerationParams(
                **self.sampling(request, spec.IMAGE_NATIVE),  # steps filled at admission (ImageJob.prepare)
                width=request.width,
                height=request.height,
                num_images=request.num_images,
                init_image=init_image,
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
            return ImageOutcome(result=result, model=entry, family=str(model.family), loaded=loaded)


def check_pixel_budget(width: int, height: int, num_images: int, max_pixels: int) -> None:
    """The most pixels one job may make on this server (``GENMESH_IMAGE_MAX_PIXELS``). Checked before
    queueing (``ImageJob.prepare``) and again once the model's family fixes unset sides."""
    spec.check_pixel_budget(width, height, num_images, max_pixels, "num_images", "use fewer or smaller images")
