"""The services the front door calls, directly over gRPC (grpc.aio, the generated stubs), as the
agent does: channels, health, and one job's event stream with cancellation and error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmesh.client.connection import CHANNEL_OPTIONS, translate
from genmesh.client.service_rpcs import service_rpcs
from genmesh.errors import Cancelled, GenmeshError, Unavailable, from_code
from genmesh.services import BY_NAME
from servers.runtime.channels import RECONNECT_OPTIONS

log = structlog.get_logger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0
# What gRPC's transport says when the server is down or restarting (not a server's own UNAVAILABLE).
_UNREACHABLE = ("failed to connect", "backends failing", "connection refused", "socket closed", "dns resolution")


class Upstreams:
    """One channel per configured service ("text" -> host:port). Build inside the running event loop."""

    def __init__(self, urls: Mapping[str, str], watched: Sequence[str]) -> None:
        """``watched``: the services /health follows (those the OpenAI routes need)."""
        self.urls = dict(urls)
        options = [*CHANNEL_OPTIONS, *RECONNECT_OPTIONS, ("grpc.lb_policy_name", "round_robin")]
        self._channels = {name: grpc.aio.insecure_channel(url, options=options) for name, url in self.urls.items()}
        self._stubs = {name: service_rpcs(name).stub(channel) for name, channel in self._channels.items()}
        self.statuses: dict[str, str] = {name: "UNKNOWN" for name in self.urls if name in watched}

    def stub(self, name: str) -> Any:
        """The service's stub; ``Unavailable`` naming it when the front door has no address for it."""
        if name not in self._stubs:
            raise Unavailable(f"the {name} service is not configured on the web front door (set --{name}-url)")
        return self._stubs[name]

    async def status(self, name: str) -> str:
        """ "SERVING", another health status name, or why the service did not answer."""
        request = health_pb2.HealthCheckRequest(service=BY_NAME[name].proto_service)
        try:
            response = await health_pb2_grpc.HealthStub(self._channels[name]).Check(
                request, timeout=HEALTH_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            return f"no answer: {exc.code().name}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def refresh(self) -> dict[str, str]:
        names = list(self.statuses)
        answers = await asyncio.gather(*(self.status(name) for name in names))
        changed = {name: status for name, status in zip(names, answers, strict=True) if self.statuses[name] != status}
        self.statuses.update(zip(names, answers, strict=True))
        if changed:
            log.info("upstream_health", **changed)
        return dict(self.statuses)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def _error(exc: grpc.RpcError, service: str) -> GenmeshError:
    """The client's translation, except that a server this process cannot reach is named as such (the
    client's own wording is about the gateway, which is not what failed here)."""
    details = (exc.details() or "").lower()
    if exc.code() == grpc.StatusCode.UNAVAILABLE and any(marker in details for marker in _UNREACHABLE):
        return Unavailable(f"the {service} service is not available (down or restarting); retry shortly")
    return translate(exc, service)


async def unary(service: str, call: Any, request: Any, metadata: Sequence[tuple[str, str]]) -> Any:
    try:
        return await call(request, metadata=metadata)
    except grpc.RpcError as exc:
        raise _error(exc, service) from None


class JobStream:
    """One genmesh job over a server-streaming RPC. ``start()`` waits for the first event (the job id,
    or the error that refused the request before queueing); ``events()`` yields the rest and raises
    the job's error as a ``GenmeshError``; ``cancel()`` ends the call, which cancels a job that is not
    detached (the service's contract when its client goes away)."""

    def __init__(self, service: str, call: Any) -> None:
        self.service = service
        self._call = call
        self.job_id = ""
        self.first: Any = None

    @classmethod
    async def open(
        cls, upstreams: Upstreams, service: str, method: str, request: Any, metadata: Sequence[tuple[str, str]]
    ) -> JobStream:
        stream = cls(service, getattr(upstreams.stub(service), method)(request, metadata=metadata))
        try:
            stream.first = await stream._next()
        except BaseException:
            stream.cancel()
            raise
        if stream.first is None:
            raise Unavailable(f"the {service} service ended the call without an answer")
        stream.job_id = stream.first.job_id
        return stream

    async def _next(self) -> Any:
        try:
            event = await self._call.read()
        except grpc.RpcError as exc:
            raise _error(exc, self.service) from None
        return None if event is grpc.aio.EOF else event

    async def events(self) -> AsyncIterator[Any]:
        """Every event after the first; a terminal error or cancellation is raised after it is seen."""
        while (event := await self._next()) is not None:
            kind = event.WhichOneof("event")
            if kind == "error":
                # The stream's status follows with the field the error names (a BadRequest detail),
                # which the event does not carry.
                await self._next()  # raises that status as a GenmeshError
                raise from_code(event.error.code, event.error.message)
            if kind == "cancelled":
                raise Cancelled(f"job {self.job_id} cancelled: {event.cancelled.reason}")
            yield event
            if kind == "result":
                return
        raise Unavailable(f"the {self.service} service ended job {self.job_id} without a result")

    async def result(self) -> Any:
        async for event in self.events():
            if event.WhichOneof("event") == "result":
                return event.result
        raise Unavailable(f"the {self.service} service ended job {self.job_id} without a result")

    def cancel(self) -> None:
        self._call.cancel()  # a no-op once the call has ended
