"""Wires the Image server together: catalog, engine, queue, storage, servicer."""

from __future__ import annotations

import asyncio

import grpc

from genmesh.image.v1 import image_pb2_grpc
from servers.compute.compile import CompileOptions, prepare_compiling
from servers.diffusion.catalog import ModelCatalog
from servers.diffusion.compiled import parse_shapes
from servers.diffusion.lora import LoraCatalog
from servers.image.engine import ImageEngine
from servers.image.servicer import ImageServicer
from servers.image.settings import ImageSettings
from servers.runtime.service import QueuedService


class ImageService(QueuedService):
    def __init__(self, settings: ImageSettings) -> None:
        compile = CompileOptions(settings.compile, settings.compile_mode)
        prepare_compiling(compile, settings.resolved_compile_cache_dir())
        self.engine = ImageEngine(
            ModelCatalog(settings.resolved_models_dir(), settings.model, pulled=settings.pulled_models()),
            cache_dir=settings.cache_dir(),
            device=settings.device,
            memory_mode=settings.memory_mode,
            keep_alive_seconds=settings.keep_alive_seconds,
            threads=settings.threads,
            max_pixels=settings.max_pixels,
            compile=compile,
            compile_warmup=parse_shapes(settings.compile_warmup),
            loras=LoraCatalog(settings.resolved_loras_dir()),
            lora_budget_bytes=settings.lora_budget_mb * 1024 * 1024,
        )
        super().__init__("image", settings, devices=[self.engine.device_label])
        self.preload = settings.preload

    def register(self, server: grpc.aio.Server) -> None:
        image_pb2_grpc.add_ImageServiceServicer_to_server(ImageServicer(self.engine, self.queue, self.store), server)

    async def warm_up(self) -> None:
        if self.preload:
            # On the worker thread that runs the jobs: one torch thread team (see JobQueue.call_on_worker).
            await asyncio.wrap_future(self.queue.call_on_worker(self.engine.preload))

    async def close(self) -> None:
        self.engine.close()
