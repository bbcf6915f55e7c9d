"""One GenerateVideo job as a use case: inputs fetched and checked before queueing, then (on the
device worker) generate, encode, store, and build the result (the queue stores it in the job's
record). The servicer only converts and submits."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from PIL import Image

from genmesh.video.v1 import video_pb2
from servers.diffusion.animate import VideoParams
from servers.diffusion.timings import job_timings
from servers.media.images import decode_image
from servers.media.video import decode_video
from servers.runtime.events import StageChanged
from servers.runtime.job_records import record_object
from servers.runtime.queue import JobContext
from servers.video import convert, records
from servers.video.engine import VideoEngine
from servers.video.types import VideoRequest
from storage import outputs
from storage.object_store import ObjectLocation, ObjectStore


@dataclass(frozen=True)
class VideoJob:
    request: VideoRequest
    engine: VideoEngine
    store: ObjectStore
    params: VideoParams
    init_image: Image.Image | None = None
    init_video_data: bytes | None = None

    @classmethod
    def prepare(cls, request: VideoRequest, engine: VideoEngine, store: ObjectStore) -> VideoJob:
        """Resolve names, fetch and decode the init media, check every parameter: each failure is
        answered at once (NOT_FOUND / INVALID_ARGUMENT naming the field), nothing waits in the queue."""
        engine.resolve(request.model, request.motion_adapter)
        image, frames, video_data = None, None, None
        if request.init_image_data is not None:
            image = decode_image(request.init_image_data, field="init_image_data")
        elif request.init_image_ref is not None:
            image = decode_image(store.get_input(request.init_image_ref, "init_image_ref"), field="init_image_ref")
        elif request.init_video_data is not None:
            video_data = request.init_video_data
            frames = decode_video(video_data, field="init_video_data")
        elif request.init_video_ref is not None:
            frames = decode_video(store.get_input(request.init_video_ref, "init_video_ref"), field="init_video_ref")
        params, note = engine.params_for(request, image, frames, engine.resolve_loras(request))
        request = replace(request, defaults_note=note)
        return cls(request, engine, store, params, image if request.init_image_data is not None else None, video_data)

    def run(self, context: JobContext) -> video_pb2.VideoResult:
        started = time.monotonic()
        request = self.request
        outcome = self.engine.generate(request, self.params, context)
        steps = outcome.output.steps_run
        context.output(StageChanged("encoding"), steps, steps)
        encode_started = time.monotonic()
        encoded = records.encode(request, outcome)
        encode_seconds = time.monotonic() - encode_started
        context.check_cancelled()  # the last point where a cancel leaves nothing stored
        context.output(StageChanged("saving"), steps, steps)
        save_started = time.monotonic()
        prefix = outputs.job_prefix(context.job_id)
        saved = records.save(self.store, prefix, request.output_format, encoded)
        init_media = request.init_image_ref or request.init_video_ref
        if self.init_image is not None or self.init_video_data is not None:
            stored = records.save_init_media(self.store, prefix, self.init_image, self.init_video_data)
            init_media = ObjectLocation(stored.bucket, stored.key)
        parameters = convert.video_parameters(request, outcome, init_media)
        timings = job_timings(
            video_pb2.Timings,
            context,
            outcome.loaded,
            outcome.output,
            started,
            save_started,
            encode_seconds=encode_seconds,
        )
        return convert.video_result(request, saved, parameters, record_object(self.store, context.job_id), timings)
