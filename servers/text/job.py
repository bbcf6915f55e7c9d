"""One Generate or Chat job as a use case: the request checked before queueing (model, schema),
then (on the llama.cpp worker) generate with deltas in frames and build the result (the queue
stores it in the job's record)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from genmesh.text.v1 import text_pb2
from servers.runtime.job_records import record_object
from servers.runtime.queue import JobContext
from servers.text import convert
from servers.text.engine import TextEngine
from servers.text.framing import FRAME_SECONDS, TextFrames
from servers.text.types import EmbedRequest, TextRequest
from storage.object_store import ObjectStore


@dataclass(frozen=True)
class TextJob:
    request: TextRequest
    method: str  # "Generate" or "Chat"
    engine: TextEngine
    store: ObjectStore
    frame_seconds: float = FRAME_SECONDS

    async def check(self) -> None:
        """An unknown model (NOT_FOUND) or a schema the grammar cannot enforce (INVALID_ARGUMENT) is
        refused before queueing, naming the field."""
        await asyncio.to_thread(self.engine.check, self.request)

    def run(self, context: JobContext) -> text_pb2.TextResult:
        frames = TextFrames(context, self.frame_seconds)
        try:
            outcome = self.engine.generate(self.request, frames)
        finally:  # the text held for the frame goes out before anything else: the record, or the end
            frames.flush()
        record = record_object(self.store, context.job_id)  # unset again if it cannot be written
        parameters = convert.text_parameters(self.request, outcome.seed)
        return convert.text_result(outcome, record, context.queued_seconds, parameters)


@dataclass(frozen=True)
class EmbedJob:
    """One Embed job: the model checked before queueing, then the vectors on the llama.cpp worker."""

    request: EmbedRequest
    engine: TextEngine
    method = "Embed"

    async def check(self) -> None:
        await asyncio.to_thread(self.engine.catalog.resolve, self.request.model)

    def run(self, context: JobContext) -> text_pb2.EmbedResult:
        return convert.embed_result(self.engine.embed(self.request, context))
