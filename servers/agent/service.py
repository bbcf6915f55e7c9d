"""Wires the Agent server together: the services it calls, queue, storage, servicer. No model, no GPU."""

from __future__ import annotations

import asyncio

import grpc

from genmesh.agent.v1 import agent_pb2_grpc
from servers.agent.eta import CostModel
from servers.agent.servicer import AgentServicer
from servers.agent.settings import AgentSettings
from servers.agent.upstreams import Upstreams
from servers.runtime.service import QueuedService


class AgentService(QueuedService):
    def __init__(self, settings: AgentSettings) -> None:
        # Each worker runs one character job at a time; the jobs mostly wait on the services' own queues.
        super().__init__("agent", settings, devices=[f"agent-{index}" for index in range(max(1, settings.workers))])
        self.upstreams = Upstreams(settings.upstream_urls())
        self.costs = CostModel()
        self.upstream_wait_seconds = settings.upstream_wait_seconds
        self.keep_alive_seconds = settings.keep_alive_seconds

    def register(self, server: grpc.aio.Server) -> None:
        servicer = AgentServicer(self.queue, self.upstreams, self.store, self.costs, self.keep_alive_seconds)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)

    async def warm_up(self) -> None:
        """Health turns SERVING once every configured service answers SERVING."""
        await asyncio.to_thread(self.upstreams.wait_serving, self.upstream_wait_seconds)

    async def close(self) -> None:
        self.upstreams.close()
