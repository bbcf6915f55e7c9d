"""ModelsService: proto in, pull job / delete / prune, proto out. Only admin keys may change models."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

from genmesh.errors import PermissionDenied
from genmesh.models.v1 import models_pb2, models_pb2_grpc
from servers.models import convert
from servers.models.engine import ModelPuller
from servers.models.job import run_pull
from servers.runtime import caller
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import JobQueue
from servers.runtime.streaming import stream_job
from storage.object_store import ObjectStore


def require_admin(action: str) -> None:
    if not caller.current().admin:
        raise PermissionDenied(f"only admin API keys may {action} (a key marked admin in the keys file)")


class ModelsServicer(JobRpcs, models_pb2_grpc.ModelsServiceServicer):
    job_message = staticmethod(convert.job_message)
    watch_message = staticmethod(convert.stream_event)

    def __init__(self, puller: ModelPuller, queue: JobQueue, store: ObjectStore) -> None:
        self.puller, self.queue, self.store = puller, queue, store
        self.keep_terminal_records()

    async def PullModel(self, request, context) -> AsyncIterator[models_pb2.PullModelResponse]:
        require_admin("pull models")
        domain = convert.pull_request(request)
        self.puller.check(domain)  # a malformed reference is answered at once, never queued
        job = self.queue.submit(functools.partial(run_pull, self.puller, domain), method="PullModel",
                                detached=request.detach)  # fmt: skip
        async for event in stream_job(self.queue, job, convert.stream_event):
            yield event

    async def DeleteModel(self, request, context) -> models_pb2.DeleteModelResponse:
        require_admin("delete models")
        return convert.deleted(await asyncio.to_thread(self.puller.delete, request.name, convert.kind(request.kind)))

    async def PruneModels(self, request, context) -> models_pb2.PruneModelsResponse:
        require_admin("prune partial downloads")
        removed, freed = await asyncio.to_thread(self.puller.prune)
        return models_pb2.PruneModelsResponse(removed_files=removed, freed_bytes=freed)
