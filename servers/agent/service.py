"""Wires the Agent server together: the services it calls, queue, storage, servicer. No model, no GPU.

Health: the overall status (service name "", what the gateway, probes and ``genmesh up`` check) is
SERVING as soon as the agent runs, so a call that needs a service that is down still reaches the
agent and gets UNAVAILABLE naming that service. The ``genmesh.agent.v1.AgentService`` status follows
the upstreams: SERVING while every configured service answers SERVING, NOT_SERVING otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import structlog
from grpc_health.v1 import health_pb2

from genmesh.agent.v1 import agent_pb2_grpc
from servers.agent.eta import CostModel
from servers.agent.servicer import AgentServicer
from servers.agent.settings import AgentSettings
from servers.agent.upstreams import Upstreams
from servers.runtime.service import QueuedService

log = structlog.get_logger(__name__)


class AgentService(QueuedService):
    def __init__(self, settings: AgentSettings) -> None:
        # Each worker runs one character job at a time; the jobs mostly wait on the services' own queues.
        super().__init__("agent", settings, devices=[f"agent-{index}" for index in range(max(1, settings.workers))])
        self.upstreams = Upstreams(settings.upstream_urls(), tls=settings.tls())
        self.costs = CostModel(store=self.store)
        self.health_poll_seconds = settings.health_poll_seconds
        self.keep_alive_seconds = settings.keep_alive_seconds

    def register(self, server: grpc.aio.Server) -> None:
        servicer = AgentServicer(self.queue, self.upstreams, self.store, self.costs, self.keep_alive_seconds)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)

    async def warm_up(self) -> None:
        await asyncio.to_thread(self.costs.load)  # after start() ensured the buckets

    async def watch_health(self, set_status: Callable[[str, int], Awaitable[None]]) -> None:
        """Keep the AgentService status in step with the upstreams; log each change once."""
        previous: dict[str, str] | None = None
        while True:
            try:
                down = await asyncio.to_thread(self.upstreams.not_serving)
            except Exception:  # never let the watcher die: a stuck status would be worse than a late one
                log.exception("upstream_health_check_failed")
                await asyncio.sleep(self.health_poll_seconds)
                continue
            if down != previous:
                serving = health_pb2.HealthCheckResponse.SERVING
                await set_status(self.service_names[0], health_pb2.HealthCheckResponse.NOT_SERVING if down else serving)
                if down:
                    log.warning("upstreams_not_serving", services=down)
                elif previous is not None:
                    log.info("upstreams_serving", services=sorted(self.upstreams.urls))
                previous = down
            await asyncio.sleep(self.health_poll_seconds)

    async def close(self) -> None:
        self.upstreams.close()
