"""Wires the Image server together: catalog, engine, queue, storage, servicer."""

from __future__ import annotations

import asyncio

import grpc

from genmesh.image.v1 import image_pb2_grpc
from servers.diffusion.catalog import ModelCatalog
from servers.image.engine import ImageEngine
from servers.image.servicer import SERVICE_NAME, ImageServicer
from servers.image.settings import ImageSettings
from servers.runtime.jobs import JobQueue
from storage.object_store import ObjectStore


class ImageService:
    name = "image"
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings
        self.engine = ImageEngine(
            ModelCatalog(settings.resolved_models_dir(), settings.model),
            cache_dir=settings.cache_dir(),
            device=settings.device,
            memory_mode=settings.memory_mode,
            keep_alive_seconds=settings.keep_alive_seconds,
            threads=settings.threads,
            max_pixels=settings.max_pixels,
        )
        self.queue = JobQueue(
            name="image",
            id_prefix="img",
            devices=[self.engine.device_label],
            max_queued=settings.max_queued,
            retention_seconds=settings.job_retention_seconds,
        )
        self.queues = (self.queue,)
        self.store = ObjectStore(settings.storage())

    def register(self, server: grpc.aio.Server) -> None:
        image_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(self.engine, self.queue, self.store), server)

    async def start(self) -> None:
        await asyncio.to_thread(self.store.ensure_buckets)
        if self.settings.preload:
            await asyncio.to_thread(self.engine.preload, "")

    async def close(self) -> None:
        self.engine.close()
