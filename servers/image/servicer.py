"""ImageService: proto in, diffusion job, proto out. Validation lives in convert.py, the job in job.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from genmesh.common.v1 import model_pb2
from genmesh.image.v1 import image_pb2, image_pb2_grpc
from servers.diffusion.catalog import has_inpainting_unet
from servers.diffusion.families import family_spec
from servers.image import convert
from servers.image.engine import ImageEngine
from servers.image.job import ImageJob
from servers.runtime import convert as common
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import JobQueue
from servers.runtime.streaming import stream_job
from storage.object_store import ObjectStore


class ImageServicer(JobRpcs, image_pb2_grpc.ImageServiceServicer):
    job_message = staticmethod(convert.job_message)
    watch_message = staticmethod(convert.stream_event)

    def __init__(self, engine: ImageEngine, queue: JobQueue, store: ObjectStore) -> None:
        self.engine = engine
        self.queue = queue
        self.store = store
        self.keep_terminal_records()

    async def GenerateImage(
        self, request: image_pb2.GenerateImageRequest, context
    ) -> AsyncIterator[image_pb2.GenerateImageResponse]:
        domain = convert.generate_image_request(request)
        # Unknown names and bad or missing init images are refused before queueing.
        work = await asyncio.to_thread(ImageJob.prepare, domain, self.engine, self.store)
        job = self.queue.submit(work.run, method="GenerateImage", detached=request.detach)
        async for event in stream_job(self.queue, job, convert.stream_event):
            yield event

    async def ListModels(self, request: image_pb2.ListModelsRequest, context) -> image_pb2.ListModelsResponse:
        catalog = self.engine.catalog
        entries = await asyncio.to_thread(catalog.entries)
        inpainting = await asyncio.to_thread(
            lambda: {entry.name: has_inpainting_unet(entry.source) for entry in entries}
        )
        default = catalog.default_name
        models = []
        for entry in entries:
            family = entry.source.family.value if entry.source.family else "sd15"
            spec = family_spec(family) if entry.source.family else None
            labels = {
                "kind": "base",
                "family": family if entry.source.family else "detected at load",
                "native_resolution": str(spec.native_resolution) if spec else "",
                "default_scheduler": spec.default_scheduler if spec else "",
                "keep_alive_seconds": str(self.engine.models.keep_alive_seconds),
                "device": self.engine.device_label,
                "location": entry.location,
            }
            if entry.smoke_test:
                labels["smoke_test"] = "true"
            if inpainting[entry.name]:
                labels["inpainting"] = "true"
            models.append(
                model_pb2.ModelInfo(
                    name=entry.name,
                    description=entry.description,
                    source=str(entry.source),
                    size_bytes=entry.size_bytes,
                    loaded=self.engine.models.is_loaded(entry.name),
                    is_default=entry.name == default,
                    labels={key: value for key, value in labels.items() if value},
                    defaults=common.generation_defaults(
                        self.engine.defaults_for(entry), spec.native_resolution if spec else 0
                    ),
                )
            )
        models += await asyncio.to_thread(common.lora_infos, self.engine.loras)
        return image_pb2.ListModelsResponse(models=models)
