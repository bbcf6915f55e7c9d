"""One GenerateImage job as a use case: inputs fetched and checked before queueing, then (on the
device worker) generate, store the images and the record, and build the result."""

from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from genmesh.image.v1 import image_pb2
from servers.diffusion.families import family_spec
from servers.image import convert, records
from servers.image.engine import ImageEngine, check_pixel_budget
from servers.image.types import ImageRequest
from servers.media.images import decode_image
from servers.runtime import convert as common
from servers.runtime.events import StageChanged
from servers.runtime.queue import JobContext
from storage import outputs
from storage.object_store import ObjectLocation, ObjectStore


@dataclass(frozen=True)
class ImageJob:
    request: ImageRequest
    engine: ImageEngine
    store: ObjectStore
    init_image: Image.Image | None = None

    @classmethod
    def prepare(cls, request: ImageRequest, engine: ImageEngine, store: ObjectStore) -> ImageJob:
        """Resolve the model, check the pixel budget and fetch/decode the init image: an unknown model
        or object is NOT_FOUND and a bad image or a job over budget INVALID_ARGUMENT at once, naming the
        field; nothing waits in the queue."""
        entry = engine.catalog.resolve(request.model)
        # An unset side is the family's native size; a model whose family is only known once loaded
        # (a folder without a declared family) has unset sides checked by the engine.
        native = family_spec(entry.source.family).native_resolution if entry.source.family else None
        width, height = request.width or native, request.height or native
        if width and height:
            check_pixel_budget(width, height, request.num_images, engine.max_pixels)
        image = None
        if request.init_image_data is not None:
            image = decode_image(request.init_image_data, field="init_image_data")
        elif request.init_image_ref is not None:
            data = store.get_input(request.init_image_ref, "init_image_ref")
            image = decode_image(data, field="init_image_ref")
        return cls(request, engine, store, image)

    def run(self, context: JobContext) -> image_pb2.ImageResult:
        started = time.monotonic()
        request = self.request
        if self.init_image is not None:
            context.output(StageChanged("encoding_input"))
        outcome = self.engine.generate(request, self.init_image, context)
        context.output(StageChanged("saving"))
        save_started = time.monotonic()
        prefix = outputs.job_prefix(context.job_id)
        saved = records.save_images(self.store, prefix, request, outcome)
        init_location = request.init_image_ref
        if request.init_image_data is not None and self.init_image is not None:
            stored = records.save_init_image(self.store, prefix, self.init_image)
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
                "parameters": common.message_dict(draft.parameters),
                "images": [{"key": item.stored.key, "seed": item.seed, "sha256": item.stored.sha256} for item in saved],
                "timings": common.message_dict(timings),
            },
        )
        timings.save_seconds = time.monotonic() - save_started
        timings.total_seconds = time.monotonic() - started
        return convert.image_result(request, outcome, saved, init_location, record, timings)
