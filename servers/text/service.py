"""Wires the Text server together: catalog, engine, queue, storage, servicer."""

from __future__ import annotations

import asyncio

import grpc

from genmesh.text.v1 import text_pb2_grpc
from servers.runtime.jobs import JobQueue
from servers.text.engine import TextEngine
from servers.text.models import ModelCatalog
from servers.text.servicer import SERVICE_NAME, TextServicer
from servers.text.settings import TextSettings
from storage.object_store import ObjectStore


class TextService:
    name = "text"
    service_names = (SERVICE_NAME,)

    def __init__(self, settings: TextSettings) -> None:
        self.settings = settings
        catalog = ModelCatalog(settings.resolved_models_dir(), settings.model_path, settings.model)
        self.engine = TextEngine(
            catalog, n_ctx=settings.context_length, n_threads=settings.threads, n_gpu_layers=settings.gpu_layers
        )
        self.queue = JobQueue(
            name="text",
            id_prefix="txt",
            devices=["llama"],
            max_queued=settings.max_queued,
            retention_seconds=settings.job_retention_seconds,
        )
        self.queues = (self.queue,)
        self.store = ObjectStore(settings.storage())

    def register(self, server: grpc.aio.Server) -> None:
        text_pb2_grpc.add_TextServiceServicer_to_server(TextServicer(self.engine, self.queue, self.store), server)

    async def start(self) -> None:
        await asyncio.to_thread(self.store.ensure_buckets)
        await asyncio.to_thread(self.engine.load, "")

    async def close(self) -> None:
        return None
