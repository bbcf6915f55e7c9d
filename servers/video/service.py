"""Wires the Video server together: catalogs, engine, queue, storage, servicer."""

from __future__ import annotations

import grpc

from genmesh.video.v1 import video_pb2_grpc
from servers.diffusion.catalog import MOTION_ADAPTERS, ModelCatalog
from servers.diffusion.compiled import VIDEO_FRAMES
from servers.diffusion.serving import DiffusionService, engine_options
from servers.video.engine import VideoEngine
from servers.video.servicer import VideoServicer
from servers.video.settings import VideoSettings


class VideoService(DiffusionService):
    def __init__(self, settings: VideoSettings) -> None:
        pulled = settings.pulled_models()
        engine = VideoEngine(
            ModelCatalog(settings.resolved_models_dir(), settings.model, pulled=pulled),
            ModelCatalog(settings.resolved_motion_adapters_dir(), settings.motion_adapter, MOTION_ADAPTERS, pulled),
            decode_chunk_size=settings.decode_chunk_size,
            **engine_options(settings, default_count=VIDEO_FRAMES),
        )
        super().__init__("video", settings, engine)

    def register(self, server: grpc.aio.Server) -> None:
        video_pb2_grpc.add_VideoServiceServicer_to_server(VideoServicer(self.engine, self.queue, self.store), server)
