"""One GenerateImage job as a use case: inputs fetched and checked before queueing, then (on the
device worker) generate, store the images, and build the result (the queue stores it in the job's
record)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from PIL import Image

from genmesh.image.v1 import image_pb2
from servers.diffusion import params as spec
from servers.diffusion.families import family_spec
from servers.diffusion.generate import check_mask, default_strength
from servers.diffusion.lora import ResolvedLora
from servers.diffusion.timings import job_timings
from servers.image import convert, records
from servers.image.engine import ImageEngine, check_pixel_budget
from servers.image.types import ImageRequest
from servers.media.images import decode_image
from servers.runtime.events import StageChanged
from servers.runtime.job_records import record_object
from servers.runtime.queue import JobContext
from storage import outputs
from storage.object_store import ObjectLocation, ObjectStore


def with_defaults(
    request: ImageRequest, defaults: spec.Defaults, init_size: tuple[int, int] | None = None
) -> ImageRequest:
    """``request`` with unset steps, guidance, strength and size filled from ``defaults`` (``init_size``:
    the init image's), the rule that needs them checked, and the defaults' note when a light one was used."""
    img2img = request.is_img2img
    width = height = None if img2img else defaults.side  # img2img: the init image's size
    if init_size is not None and defaults.note and defaults.side:  # light defaults: fitted within theirs
        width, height = spec.fit_within(*init_size, defaults.side)
    filled = replace(
        request,
        steps=request.steps or defaults.steps,
        guidance_scale=defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale,
        width=request.width or width,
        height=request.height or height,
        strength=default_strength(request.has_mask) if img2img and request.strength is None else request.strength,
    )
    spec.check_steps_strength(filled.steps or 0, filled.strength)
    sized = width is not None and not (request.width and request.height)
    note = defaults.note_for(
        size=(filled.width, filled.height) if sized else None,  # type: ignore[arg-type]
        frames=None,
        steps=filled.steps if request.steps is None else None,
    )
    return replace(filled, defaults_note=note)


@dataclass(frozen=True)
class ImageJob:
    request: ImageRequest
    engine: ImageEngine
    store: ObjectStore
    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None  # greyscale
    loras: tuple[ResolvedLora, ...] = ()

    @classmethod
    def prepare(cls, request: ImageRequest, engine: ImageEngine, store: ObjectStore) -> ImageJob:
        """Resolve the model and the LoRAs, check the pixel budget, fetch/decode the init image and
        mask: an unknown model, LoRA or object is NOT_FOUND and a bad image or mask, a LoRA for another
        family or a job over budget INVALID_ARGUMENT at once, naming the field; nothing waits in the queue."""
        entry = engine.catalog.resolve(request.model)
        image = None
        if request.init_image_data is not None:
            image = decode_image(request.init_image_data, field="init_image_data")
        elif request.init_image_ref is not None:
            data = store.get_input(request.init_image_ref, "init_image_ref")
            image = decode_image(data, field="init_image_ref")
        request = with_defaults(request, engine.defaults_for(entry), image.size if image is not None else None)
        # An unset side is the family's native size; a model whose family is only known once loaded
        # (a folder without a declared family) has unset sides checked by the engine.
        native = family_spec(entry.source.family).native_resolution if entry.source.family else None
        width, height = request.width or native, request.height or native
        if width and height:
            check_pixel_budget(width, height, request.num_images, engine.max_pixels)
        mask = None
        if request.mask_image_data is not None or request.mask_image_ref is not None:
            field = request.mask_field
            data = request.mask_image_data
            if data is None:
                assert request.mask_image_ref is not None
                data = store.get_input(request.mask_image_ref, field)
            mask = decode_image(data, field=field).convert("L")
            check_mask(mask, image, field)
        loras = engine.resolve_loras(request, entry)
        return cls(request, engine, store, image, mask, loras)

    def run(self, context: JobContext) -> image_pb2.ImageResult:
        started = time.monotonic()
        request = self.request
        if self.init_image is not None:
            context.output(StageChanged("encoding_input"))
        outcome = self.engine.generate(request, self.init_image, context, mask_image=self.mask_image, loras=self.loras)
        context.output(StageChanged("saving"))
        save_started = time.monotonic()
        prefix = outputs.job_prefix(context.job_id)
        saved = records.save_images(self.store, prefix, request, outcome)
        init_location = request.init_image_ref
        if request.init_image_data is not None and self.init_image is not None:
            stored = records.save_init_image(self.store, prefix, self.init_image)
            init_location = ObjectLocation(stored.bucket, stored.key)
        mask_location = request.mask_image_ref
        if request.mask_image_data is not None and self.mask_image is not None:
            stored = records.save_mask_image(self.store, prefix, self.mask_image)
            mask_location = ObjectLocation(stored.bucket, stored.key)
        parameters = convert.image_parameters(request, outcome, init_location, mask_location)
        timings = job_timings(image_pb2.Timings, context, outcome.loaded, outcome.result, started, save_started)
        return convert.image_result(request, saved, parameters, record_object(self.store, context.job_id), timings)
