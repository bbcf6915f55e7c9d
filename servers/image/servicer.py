"""ImageService: proto in, diffusion job, proto out. Validation lives in convert.py, the job in job.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from genmesh.image.v1 import image_pb2, image_pb2_grpc
from servers.diffusion.catalog import has_inpainting_unet
from servers.diffusion.families import family_spec
from servers.diffusion.serving import DiffusionServicer
from servers.image import convert
from servers.image.engine import ImageEngine
from servers.image.job import ImageJob
from servers.runtime import convert as common


class ImageServicer(DiffusionServicer, image_pb2_grpc.ImageServiceServicer):
    engine: ImageEngine
    job_message = staticmethod(convert.job_message)
    watch_message = staticmethod(convert.stream_event)

    async def GenerateImage(
        self, request: image_pb2.GenerateImageRequest, context
    ) -> AsyncIterator[image_pb2.GenerateImageResponse]:
        domain = convert.generate_image_request(request)
        # Unknown names and bad or missing init images are refused before queueing.
        prepare = functools.partial(ImageJob.prepare, domain, self.engine, self.store)
        async for event in self.submit(prepare, "GenerateImage", request.detach):
            yield event

    async def ListModels(self, request: image_pb2.ListModelsRequest, context) -> image_pb2.ListModelsResponse:
        catalog = self.engine.catalog
        entries = await asyncio.to_thread(catalog.entries)
        inpainting = await asyncio.to_thread(
            lambda: {entry.name: has_inpainting_unet(entry.source) for entry in entries}
        )
        models = []
        for entry in entries:
            family = entry.source.family
            spec = family_spec(family) if family else None
            labels = {
                "kind": "base",
                "family": family.value if family else "detected at load",
                "native_resolution": str(spec.native_resolution) if spec else "",
                "default_scheduler": spec.default_scheduler if spec else "",
                "inpainting": "true" if inpainting[entry.name] else "",
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
        models += await asyncio.to_thread(common.lora_infos, self.engine.loras)
        return image_pb2.ListModelsResponse(models=models)
