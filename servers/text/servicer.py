"""TextService: proto in, text job, proto out. Validation lives in convert.py, the job in job.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import grpc
import structlog

from genmesh.common.v1 import model_pb2
from genmesh.text.v1 import text_pb2, text_pb2_grpc
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import JobQueue
from servers.runtime.streaming import stream_job
from servers.text import convert
from servers.text.engine import TextEngine
from servers.text.framing import FRAME_SECONDS
from servers.text.job import EmbedJob, TextJob
from servers.text.types import TextRequest
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)


def client_id(context: grpc.aio.ServicerContext) -> str:
    return dict(context.invocation_metadata() or ()).get("x-client-id", "direct")


class TextServicer(JobRpcs, text_pb2_grpc.TextServiceServicer):
    job_message = staticmethod(convert.job_message)
    # Generate and Chat events have the same shape: a watcher gets GenerateResponse for both.
    watch_message = staticmethod(functools.partial(convert.stream_event, text_pb2.GenerateResponse))

    def __init__(
        self, engine: TextEngine, queue: JobQueue, store: ObjectStore, frame_seconds: float = FRAME_SECONDS
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.store = store
        self.frame_seconds = frame_seconds
        self.keep_terminal_records()

    def _stream(self, job: TextJob, detach: bool, response_type: type) -> AsyncIterator:
        queued = self.queue.submit(job.run, method=job.method, detached=detach)
        return stream_job(self.queue, queued, functools.partial(convert.stream_event, response_type))

    def _job(self, request: TextRequest, method: str, context: grpc.aio.ServicerContext) -> TextJob:
        return TextJob(request, method, client_id(context), self.engine, self.store, self.frame_seconds)

    async def Generate(self, request: text_pb2.GenerateRequest, context) -> AsyncIterator[text_pb2.GenerateResponse]:
        job = self._job(convert.generate_request(request), "Generate", context)
        await job.check()
        async for event in self._stream(job, request.detach, text_pb2.GenerateResponse):
            yield event

    async def Chat(self, request: text_pb2.ChatRequest, context) -> AsyncIterator[text_pb2.ChatResponse]:
        job = self._job(convert.chat_request(request), "Chat", context)
        await job.check()
        async for event in self._stream(job, request.detach, text_pb2.ChatResponse):
            yield event

    async def Embed(self, request: text_pb2.EmbedRequest, context) -> AsyncIterator[text_pb2.EmbedResponse]:
        job = EmbedJob(convert.embed_request(request), self.engine)
        await job.check()
        queued = self.queue.submit(job.run, method=job.method, detached=request.detach)
        async for event in stream_job(
            self.queue, queued, functools.partial(convert.stream_event, text_pb2.EmbedResponse)
        ):
            yield event

    async def ListModels(self, request: text_pb2.ListModelsRequest, context) -> text_pb2.ListModelsResponse:
        catalog = self.engine.catalog
        specs = await asyncio.to_thread(catalog.specs)
        return text_pb2.ListModelsResponse(
            models=[
                model_pb2.ModelInfo(
                    name=spec.name,
                    description=spec.description,
                    source=spec.source,
                    size_bytes=spec.size_bytes,
                    loaded=self.engine.models.is_loaded(spec.name),
                    is_default=spec.name == catalog.default_name,
                    labels={"format": "gguf", "context_length": str(self.engine.n_ctx), "location": spec.location},
                )
                for spec in specs
            ]
        )
