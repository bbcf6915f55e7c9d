"""ImageService: proto in, diffusion job, proto out. Validation lives in convert.py, the job in job.py;
the RPCs, ListModels and the messages come from ``DiffusionServicer``."""

from __future__ import annotations

from genmesh.common.v1 import model_pb2
from genmesh.image.v1 import image_pb2, image_pb2_grpc
from servers.diffusion.catalog import has_inpainting_unet
from servers.diffusion.families import family_spec
from servers.diffusion.serving import DiffusionServicer, Generation
from servers.image import convert
from servers.image.engine import ImageEngine
from servers.image.job import ImageJob
from servers.runtime import convert as common


class ImageServicer(DiffusionServicer, image_pb2_grpc.ImageServiceServicer):
    engine: ImageEngine
    # Unknown names and bad or missing init images are refused before queueing.
    GenerateImage = Generation(image_pb2, convert.generate_image_request, ImageJob.prepare)

    def model_infos(self) -> list[model_pb2.ModelInfo]:
        """Base models with their family's native size and scheduler, and whether they inpaint."""
        catalog = self.engine.catalog
        models = []
        for entry in catalog.entries():
            family = entry.source.family
            spec = family_spec(family) if family else None
            labels = {
                "kind": "base",
                "family": family.value if family else "detected at load",
                "native_resolution": str(spec.native_resolution) if spec else "",
                "default_scheduler": spec.default_scheduler if spec else "",
                "inpainting": "true" if has_inpainting_unet(entry.source) else "",
            }
            defaults = common.generation_defaults(
                self.engine.defaults_for(entry), spec.native_resolution if spec else 0
            )
            models.append(
                self.model_info(
                    entry,
                    labels,
                    loaded=self.engine.models.is_loaded(entry.name),
                    is_default=entry.name == catalog.default_name,
                    defaults=defaults,
                )
            )
        return models
