"""VideoService: proto in, AnimateDiff job, proto out. Validation lives in convert.py, the job in job.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from genmesh.common.v1 import model_pb2
from genmesh.video.v1 import video_pb2, video_pb2_grpc
from servers.diffusion.catalog import CatalogEntry
from servers.runtime import convert as common
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import JobQueue
from servers.runtime.streaming import stream_job
from servers.video import convert
from servers.video.engine import VideoEngine
from servers.video.job import VideoJob
from storage.object_store import ObjectStore


class VideoServicer(JobRpcs, video_pb2_grpc.VideoServiceServicer):
    job_message = staticmethod(convert.job_message)
    watch_message = staticmethod(convert.stream_event)

    def __init__(self, engine: VideoEngine, queue: JobQueue, store: ObjectStore) -> None:
        self.engine = engine
        self.queue = queue
        self.store = store
        self.keep_terminal_records()

    async def GenerateVideo(
        self, request: video_pb2.GenerateVideoRequest, context
    ) -> AsyncIterator[video_pb2.GenerateVideoResponse]:
        domain = convert.generate_video_request(request)
        # Unknown names, bad inline media and out-of-range parameters are refused before queueing.
        job = await asyncio.to_thread(VideoJob.prepare, domain, self.engine, self.store)
        submitted = self.queue.submit(job.run, method="GenerateVideo", detached=request.detach)
        async for event in stream_job(self.queue, submitted, convert.stream_event):
            yield event

    async def ListModels(self, request: video_pb2.ListModelsRequest, context) -> video_pb2.ListModelsResponse:
        engine = self.engine
        models, adapters = await asyncio.gather(
            asyncio.to_thread(engine.catalog.entries), asyncio.to_thread(engine.adapters.entries)
        )
        loaded = engine.loaded_names() or ("", "")
        defaults = (engine.catalog.default_name, engine.adapters.default_name)
        infos = [self._info(entry, "base", entry.name == defaults[0], entry.name == loaded[0]) for entry in models]
        infos += [
            self._info(entry, "motion_adapter", entry.name == defaults[1], entry.name == loaded[1])
            for entry in adapters
        ]
        infos += await asyncio.to_thread(common.lora_infos, engine.loras)
        return video_pb2.ListModelsResponse(models=infos)

    def _info(self, entry: CatalogEntry, kind: str, is_default: bool, loaded: bool) -> model_pb2.ModelInfo:
        labels = {
            "kind": kind,
            "family": "sd15",
            "memory_mode": self.engine.memory_mode,
            "keep_alive_seconds": str(self.engine.models.keep_alive_seconds),
            "device": self.engine.device_label,
            "location": entry.location,
        }
        if kind == "base":
            labels["default_scheduler"] = "SCHEDULER_DDIM"
        if entry.smoke_test:
            labels["smoke_test"] = "true"
        return model_pb2.ModelInfo(
            name=entry.name,
            description=entry.description,
            source=str(entry.source),
            size_bytes=entry.size_bytes,
            loaded=loaded,
            is_default=is_default,
            labels=labels,
            defaults=common.generation_defaults(self.engine.defaults_for(entry)) if kind == "base" else None,
        )
