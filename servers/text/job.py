"""One Generate or Chat job as a use case: the request checked before queueing (model, schema),
then (on the llama.cpp worker) generate with deltas in frames, store the record, build the result."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from genmesh.errors import Unavailable
from genmesh.text.v1 import text_pb2
from servers.runtime.queue import JobContext
from servers.text import convert
from servers.text.engine import TextEngine
from servers.text.framing import FRAME_SECONDS, TextFrames
from servers.text.records import save_record
from servers.text.types import TextRequest
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TextJob:
    request: TextRequest
    method: str  # "Generate" or "Chat", as recorded
    client_id: str
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
        try:
            record = save_record(self.store, context.job_id, self.method, self.request, outcome, self.client_id)
        except Unavailable as exc:
            # The text is the result and was already streamed: return it rather than lose it.
            log.warning("record_not_saved", error=exc.message)
            record = None
        return convert.text_result(outcome, record, context.queued_seconds)
