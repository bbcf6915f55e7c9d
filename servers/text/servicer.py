"""TextService: proto in, engine job, proto out. Validation lives in convert.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import grpc
import structlog

from genmesh.common.v1 import model_pb2
from genmesh.errors import Unavailable
from genmesh.text.v1 import text_pb2, text_pb2_grpc
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.jobs import JobContext, JobQueue
from servers.runtime.streaming import stream_job
from servers.text import convert
from servers.text.engine import TextEngine
from servers.text.records import save_record
from servers.text.types import TextRequest
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)


def client_id(context: grpc.aio.ServicerContext) -> str:
    return dict(context.invocation_metadata() or ()).get("x-client-id", "direct")


class TextServicer(JobRpcs, text_pb2_grpc.TextServiceServicer):
    job_message = staticmethod(convert.job_message)
    # Generate and Chat events have the same shape: a watcher gets GenerateResponse for both.
    watch_message = staticmethod(functools.partial(convert.stream_event, text_pb2.GenerateResponse))

    def __init__(self, engine: TextEngine, queue: JobQueue, store: ObjectStore) -> None:
        self.engine = engine
        self.queue = queue
        self.store = store
        self.keep_terminal_records()

    def _work(self, request: TextRequest, method: str, client: str, context: JobContext) -> text_pb2.TextResult:
        outcome = self.engine.generate(request, context)
        context.flush()  # the text is complete: the frame's last tokens go out now, not after the record
        try:
            record = save_record(self.store, context.job_id, method, request, outcome, client)
        except Unavailable as exc:
            # The text is the result and was already streamed: return it rather than lose it.
            log.warning("record_not_saved", error=exc.message)
            record = None
        return convert.text_result(outcome, record, context.queued_seconds)

    def _stream(self, request: TextRequest, method: str, detach: bool, response_type: type, context):
        work = functools.partial(self._work, request, method, client_id(context))
        job = self.queue.submit(work, method=method, detached=detach)
        return stream_job(self.queue, job, functools.partial(convert.stream_event, response_type))

    async def Generate(self, request: text_pb2.GenerateRequest, context) -> AsyncIterator[text_pb2.GenerateResponse]:
        domain = convert.generate_request(request)
        await asyncio.to_thread(self.engine.check, domain)  # refused before queueing, naming the field
        async for event in self._stream(domain, "Generate", request.detach, text_pb2.GenerateResponse, context):
            yield event

    async def Chat(self, request: text_pb2.ChatRequest, context) -> AsyncIterator[text_pb2.ChatResponse]:
        domain = convert.chat_request(request)
        await asyncio.to_thread(self.engine.check, domain)  # refused before queueing, naming the field
        async for event in self._stream(domain, "Chat", request.detach, text_pb2.ChatResponse, context):
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
                    loaded=spec.name == self.engine.loaded_name,
                    is_default=spec.name == catalog.default_name,
                    labels={"format": "gguf", "context_length": str(self.engine.n_ctx)},
                )
                for spec in specs
            ]
        )
