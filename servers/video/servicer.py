"""VideoService: proto in, AnimateDiff job, proto out. Validation lives in convert.py, the job in job.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from genmesh.video.v1 import video_pb2, video_pb2_grpc
from servers.diffusion.serving import DiffusionServicer
from servers.runtime import convert as common
from servers.video import convert
from servers.video.engine import ModelPair, VideoEngine
from servers.video.job import VideoJob


class VideoServicer(DiffusionServicer, video_pb2_grpc.VideoServiceServicer):
    engine: VideoEngine
    job_message = staticmethod(convert.job_message)
    watch_message = staticmethod(convert.stream_event)

    async def GenerateVideo(
        self, request: video_pb2.GenerateVideoRequest, context
    ) -> AsyncIterator[video_pb2.GenerateVideoResponse]:
        domain = convert.generate_video_request(request)
        # Unknown names, bad inline media and out-of-range parameters are refused before queueing.
        prepare = functools.partial(VideoJob.prepare, domain, self.engine, self.store)
        async for event in self.submit(prepare, "GenerateVideo", request.detach):
            yield event

    async def ListModels(self, request: video_pb2.ListModelsRequest, context) -> video_pb2.ListModelsResponse:
        engine = self.engine
        models, adapters = await asyncio.gather(
            asyncio.to_thread(engine.catalog.entries), asyncio.to_thread(engine.adapters.entries)
        )
        loaded = engine.models.loaded_key or ModelPair("", "")
        default = ModelPair(engine.catalog.default_name, engine.adapters.default_name)
        common_labels = {"family": "sd15", "memory_mode": engine.memory_mode}
        infos = [
            self.model_info(
                entry,
                {"kind": "base", **common_labels, "default_scheduler": "SCHEDULER_DDIM"},
                loaded=entry.name == loaded.model,
                is_default=entry.name == default.model,
                defaults=common.generation_defaults(engine.defaults_for(entry)),
            )
            for entry in models
        ]
        infos += [
            self.model_info(
                entry,
                {"kind": "motion_adapter", **common_labels},
                loaded=entry.name == loaded.motion_adapter,
                is_default=entry.name == default.motion_adapter,
            )
            for entry in adapters
        ]
        infos += await asyncio.to_thread(common.lora_infos, engine.loras)
        return video_pb2.ListModelsResponse(models=infos)
