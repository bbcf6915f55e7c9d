"""Wires the Text server together: catalog, engine, queue, storage, servicer."""

from __future__ import annotations

import asyncio

import grpc

from genmesh.text.v1 import text_pb2_grpc
from servers.runtime.service import QueuedService
from servers.text.engine import TextEngine
from servers.text.models import ModelCatalog
from servers.text.servicer import TextServicer
from servers.text.settings import TextSettings


class TextService(QueuedService):
    def __init__(self, settings: TextSettings) -> None:
        super().__init__("text", settings, devices=["llama"])
        catalog = ModelCatalog(
            settings.resolved_models_dir(), settings.model_path, settings.model, settings.pulled_models()
        )
        self.engine = TextEngine(
            catalog, n_ctx=settings.context_length, n_threads=settings.threads, n_gpu_layers=settings.gpu_layers
        )
        self.frame_seconds = settings.stream_frame_ms / 1000

    def register(self, server: grpc.aio.Server) -> None:
        text_pb2_grpc.add_TextServiceServicer_to_server(
            TextServicer(self.engine, self.queue, self.store, self.frame_seconds), server
        )

    async def warm_up(self) -> None:
        await asyncio.to_thread(self.engine.preload)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)
