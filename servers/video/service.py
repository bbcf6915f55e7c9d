"""Wires the Video server together: catalogs, engine, queue, storage, servicer."""

from __future__ import annotations

import asyncio

import grpc

from genmesh.video.v1 import video_pb2_grpc
from servers.diffusion.catalog import MOTION_ADAPTERS, ModelCatalog
from servers.runtime.jobs import JobQueue
from servers.video.engine import VideoEngine
from servers.video.servicer import SERVICE_NAME, VideoServicer
from servers.video.settings import VideoSettings
from storage.object_store import ObjectStore


class VideoService:
    name = "video"
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: VideoSettings) -> None:
        self.settings = settings
        self.engine = VideoEngine(
            ModelCatalog(settings.resolved_models_dir(), settings.model),
            ModelCatalog(settings.resolved_motion_adapters_dir(), settings.motion_adapter, MOTION_ADAPTERS),
            cache_dir=settings.cache_dir(),
            device=settings.device,
            memory_mode=settings.memory_mode,
            keep_alive_seconds=settings.keep_alive_seconds,
            threads=settings.threads,
            decode_chunk_size=settings.decode_chunk_size,
            max_pixels=settings.max_pixels,
        )
        self.queue = JobQueue(
            name="video",
            id_prefix="vid",
            devices=[self.engine.device_label],
            max_queued=settings.max_queued,
            retention_seconds=settings.job_retention_seconds,
        )
        self.queues = (self.queue,)
        self.store = ObjectStore(settings.storage())

    def register(self, server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(VideoServicer(self.engine, self.queue, self.store), server)

    async def start(self) -> None:
        await asyncio.to_thread(self.store.ensure_buckets)
        if self.settings.preload:
            await asyncio.to_thread(self.engine.preload)

    async def close(self) -> None:
        self.engine.close()
