"""TextService: proto in, text job, proto out. Validation lives in convert.py, the job in job.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

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

    def _text_job(self, request: TextRequest, method: str) -> TextJob:
        return TextJob(request, method, self.engine, self.store, self.frame_seconds)

    async def _run(self, job: TextJob | EmbedJob, detach: bool, response_type: type) -> AsyncIterator:
        """Check the job before queueing, then stream its events as ``response_type``."""
        await job.check()
        queued = self.queue.submit(job.run, method=job.method, detached=detach)
        async for event in stream_job(self.queue, queued, functools.partial(convert.stream_event, response_type)):
            yield event

    async def Generate(self, request: text_pb2.GenerateRequest, context) -> AsyncIterator[text_pb2.GenerateResponse]:
        job = self._text_job(convert.generate_request(request), "Generate")
        async for event in self._run(job, request.detach, text_pb2.GenerateResponse):
            yield event

    async def Chat(self, request: text_pb2.ChatRequest, context) -> AsyncIterator[text_pb2.ChatResponse]:
        job = self._text_job(convert.chat_request(request), "Chat")
        async for event in self._run(job, request.detach, text_pb2.ChatResponse):
            yield event

    async def Embed(self, request: text_pb2.EmbedRequest, context) -> AsyncIterator[text_pb2.EmbedResponse]:
        job = EmbedJob(convert.embed_request(request), self.engine)
        async for event in self._run(job, request.detach, text_pb2.EmbedResponse):
            yield event

    async def ListModels(self, request: text_pb2.ListModelsRequest, context) -> text_pb2.ListModelsResponse:
        engine, default = self.engine, self.engine.catalog.default_name
        specs = await asyncio.to_thread(engine.catalog.specs)
        loaded = engine.models.is_loaded
        return text_pb2.ListModelsResponse(
            models=[convert.model_info(spec, default, engine.n_ctx, loaded(spec.name)) for spec in specs]
        )
