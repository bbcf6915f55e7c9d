"""ImageService: proto in, diffusion job, proto out. Validation lives in convert.py."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

from google.protobuf import json_format
from PIL import Image

from genmesh.common.v1 import model_pb2
from genmesh.image.v1 import image_pb2, image_pb2_grpc
from servers.diffusion.families import family_spec
from servers.image import convert, records
from servers.image.engine import ImageEngine
from servers.image.types import ImageRequest, ObjectLocation
from servers.media.images import decode_image
from servers.runtime.jobs import JobContext, JobQueue, StageChanged
from servers.runtime.streaming import stream_job
from storage import outputs
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

SERVICE_NAME = image_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name


class ImageServicer(image_pb2_grpc.ImageServiceServicer):
    def __init__(self, engine: ImageEngine, queue: JobQueue, store: ObjectStore) -> None:
        self.engine = engine
        self.queue = queue
        self.store = store

    def _work(
        self, request: ImageRequest, init_image: Image.Image | None, context: JobContext
    ) -> image_pb2.ImageResult:
        started = time.monotonic()
        init_location = request.init_image_ref
        if request.init_image_ref is not None:
            context.output(StageChanged("encoding_input"))
            ref = request.init_image_ref
            init_image = decode_image(self.store.get_bytes(ref.bucket, ref.key), field="init_image_ref")
        outcome = self.engine.generate(request, init_image, context)
        context.output(StageChanged("saving"))
        save_started = time.monotonic()
        prefix = outputs.job_prefix(context.job_id)
        saved = records.save_images(self.store, prefix, request, outcome)
        if request.init_image_data is not None and init_image is not None:
            stored = records.save_init_image(self.store, prefix, init_image)
            init_location = ObjectLocation(stored.bucket, stored.key)
        result = outcome.result
        timings = image_pb2.Timings(
            queued_seconds=context.queued_seconds,
            model_load_seconds=outcome.load_seconds,
            denoise_seconds=result.denoise_seconds,
            decode_seconds=result.decode_seconds,
        )
        draft = convert.image_result(request, outcome, saved, init_location, None, timings)
        record = outputs.save_record(
            self.store,
            prefix,
            {
                "job_id": context.job_id,
                "parameters": _as_dict(draft.parameters),
                "images": [{"key": item.stored.key, "seed": item.seed, "sha256": item.stored.sha256} for item in saved],
                "timings": _as_dict(timings),
            },
        )
        timings.save_seconds = time.monotonic() - save_started
        timings.total_seconds = time.monotonic() - started
        return convert.image_result(request, outcome, saved, init_location, record, timings)

    async def GenerateImage(
        self, request: image_pb2.GenerateImageRequest, context
    ) -> AsyncIterator[image_pb2.GenerateImageResponse]:
        domain = convert.generate_image_request(request)
        await asyncio.to_thread(self.engine.catalog.resolve, domain.model)  # unknown model: NOT_FOUND at once
        init_image = None
        if domain.init_image_data is not None:  # bad images are refused before queueing
            init_image = await asyncio.to_thread(decode_image, domain.init_image_data, field="init_image_data")
        work = functools.partial(self._work, domain, init_image)
        job = self.queue.submit(work, method="GenerateImage", detached=request.detach)
        async for event in stream_job(self.queue, job, convert.stream_event):
            yield event

    async def ListModels(self, request: image_pb2.ListModelsRequest, context) -> image_pb2.ListModelsResponse:
        catalog = self.engine.catalog
        entries = await asyncio.to_thread(catalog.entries)
        default = catalog.default_name
        models = []
        for entry in entries:
            family = entry.source.family.value if entry.source.family else "sd15"
            spec = family_spec(family) if entry.source.family else None
            labels = {
                "family": family if entry.source.family else "detected at load",
                "native_resolution": str(spec.native_resolution) if spec else "",
                "default_scheduler": spec.default_scheduler if spec else "",
                "keep_alive_seconds": str(self.engine.models.keep_alive_seconds),
                "device": self.engine.device_label,
            }
            if entry.smoke_test:
                labels["smoke_test"] = "true"
            models.append(
                model_pb2.ModelInfo(
                    name=entry.name,
                    description=entry.description,
                    source=str(entry.source),
                    size_bytes=entry.size_bytes,
                    loaded=self.engine.models.is_loaded(entry.name),
                    is_default=entry.name == default,
                    labels={key: value for key, value in labels.items() if value},
                )
            )
        return image_pb2.ListModelsResponse(models=models)

    async def GetJob(self, request: image_pb2.GetJobRequest, context) -> image_pb2.Job:
        return convert.job_message(self.queue.get(validate_job_id(request.job_id)))

    async def CancelJob(self, request: image_pb2.CancelJobRequest, context) -> image_pb2.Job:
        return convert.job_message(self.queue.cancel(validate_job_id(request.job_id)))


def _as_dict(message) -> dict:

    return json_format.MessageToDict(message, preserving_proto_field_name=True)
