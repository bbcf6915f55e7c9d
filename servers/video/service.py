"""Wires the Video server together: catalogs, engine, queue, storage, servicer."""

from __future__ import annotations

import asyncio

import grpc

from genmesh.video.v1 import video_pb2_grpc
from servers.compute.compile import CompileOptions, prepare_compiling
from servers.diffusion.catalog import MOTION_ADAPTERS, ModelCatalog
from servers.diffusion.compiled import VIDEO_FRAMES, parse_shapes
from servers.diffusion.lora import LoraCatalog
from servers.runtime.service import QueuedService
from servers.video.engine import VideoEngine
from servers.video.servicer import VideoServicer
from servers.video.settings import VideoSettings


class VideoService(QueuedService):
    def __init__(self, settings: VideoSettings) -> None:
        compile = CompileOptions(settings.compile, settings.compile_mode)
        prepare_compiling(compile, settings.resolved_compile_cache_dir())
        self.engine = VideoEngine(
            ModelCatalog(settings.resolved_models_dir(), settings.model, pulled=(pulled := settings.pulled_models())),
            ModelCatalog(settings.resolved_motion_adapters_dir(), settings.motion_adapter, MOTION_ADAPTERS, pulled),
            cache_dir=settings.cache_dir(),
            device=settings.device,
            memory_mode=settings.memory_mode,
            keep_alive_seconds=settings.keep_alive_seconds,
            threads=settings.threads,
            decode_chunk_size=settings.decode_chunk_size,
            max_pixels=settings.max_pixels,
            compile=compile,
            compile_warmup=parse_shapes(settings.compile_warmup, default_count=VIDEO_FRAMES),
            loras=LoraCatalog(settings.resolved_loras_dir()),
            lora_budget_bytes=settings.lora_budget_mb * 1024 * 1024,
        )
        super().__init__("video", settings, devices=[self.engine.device_label])
        self.preload = settings.preload

    def register(self, server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(VideoServicer(self.engine, self.queue, self.store), server)

    async def warm_up(self) -> None:
        if self.preload:
            # On the worker thread that runs the jobs: one torch thread team (see JobQueue.call_on_worker).
            await asyncio.wrap_future(self.queue.call_on_worker(self.engine.preload))

    async def close(self) -> None:
        self.engine.close()
