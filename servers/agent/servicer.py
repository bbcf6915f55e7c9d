"""AgentService: proto in, character job, proto out. Validation lives in convert.py, the job in job.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import structlog

from genmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from servers.agent import convert
from servers.agent.eta import CostModel
from servers.agent.job import CharacterJob
from servers.agent.upstreams import Upstreams
from servers.runtime import caller
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import JobQueue
from servers.runtime.streaming import stream_job
from storage.object_store import ObjectStore


def call_metadata() -> tuple[tuple[str, str], ...]:
    """The caller's request id and who it is (bound by the interceptor), passed on to every sub-job:
    the sub-jobs belong to the agent job's owner, who can see and cancel them."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return (*((("x-request-id", str(request_id)),) if request_id else ()), *caller.current().headers())


class AgentServicer(JobRpcs, agent_pb2_grpc.AgentServiceServicer):
    job_message = staticmethod(convert.job_message)
    watch_message = staticmethod(convert.stream_event)  # all stages: a watcher does not know which run

    def __init__(
        self,
        queue: JobQueue,
        upstreams: Upstreams,
        store: ObjectStore,
        costs: CostModel,
        keep_alive_seconds: int | None = None,
    ) -> None:
        self.queue = queue
        self.upstreams = upstreams
        self.store = store
        self.costs = costs
        self.keep_alive_seconds = keep_alive_seconds
        self.keep_terminal_records()

    async def CreateCharacter(
        self, request: agent_pb2.CreateCharacterRequest, context
    ) -> AsyncIterator[agent_pb2.CreateCharacterResponse]:
        domain = convert.create_character_request(request)
        # Missing services and a missing portrait are answered at once; nothing waits in the queue.
        job = await asyncio.to_thread(
            CharacterJob.prepare,
            domain,
            self.upstreams,
            self.store,
            self.costs,
            call_metadata(),
            self.keep_alive_seconds,
        )
        submitted = self.queue.submit(job.run, method="CreateCharacter", detached=request.detach)
        to_message = functools.partial(convert.stream_event, stages=domain.stages)
        async for event in stream_job(self.queue, submitted, to_message):
            yield event
