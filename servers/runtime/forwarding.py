"""Any replica answers for any job: a call about another replica's job is forwarded to it, once.

Every RPC whose request has a ``job_id`` field (GetJob, CancelJob, WatchTrainingJob, ...) is
checked: when the id names another replica (``servers/runtime/job_ids.py``), the call goes to that
replica's address from ``GENMESH_PEERS`` (never from the caller), with the caller's request and
client ids and the ``x-genmesh-forwarded`` marker; a marked call is always answered locally, so
nothing is forwarded twice. The gateway strips the marker from outside requests.

When the owner cannot be reached, the call is answered here after all: GetJob then finds the job's
terminal record in the object store (``servers/runtime/job_records.py``) if it finished, and
otherwise the caller gets UNAVAILABLE naming the replica. Services need no code for any of this:
the interceptor reads the request types from the descriptor pool.

ListJobs is fanned out instead: the replica asked sets ``job_listing.peer_live_jobs`` to a call of
every other replica's ListJobs (marked, so each answers its queued and running jobs from memory)
and merges them with its own and with the index of finished jobs. A replica that does not answer
is left out of that page (logged). With a ``{n}`` template the count of replicas is not known:
replicas 0..``TEMPLATE_FAN_OUT - 1`` are asked.

This is the frontend-forwards-to-the-shard-owner pattern (Temporal's frontend and history hosts),
with the owner encoded in the id instead of looked up in a ring: replicas never move jobs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import descriptor_pool

from genmesh.errors import NotFound, Unavailable
from servers.runtime import caller, job_listing
from servers.runtime.channels import MESSAGE_SIZE_OPTIONS, RECONNECT_OPTIONS
from servers.runtime.handlers import HandlerInterceptor, rewrapped
from servers.runtime.job_ids import JobIds, job_owner
from servers.runtime.peers import Peers
from servers.runtime.tls import TlsFiles

log = structlog.get_logger(__name__)

FORWARDED = "x-genmesh-forwarded"  # set on a forwarded call: answer it here, never forward it again
UNARY_TIMEOUT_SECONDS = 30.0  # a GetJob or CancelJob (which waits up to 5 s) to a peer that hangs
LIST_TIMEOUT_SECONDS = 5.0  # a peer's live jobs, from memory: fast, or left out of the page
TEMPLATE_FAN_OUT = 8


@functools.cache
def addresses_job(method: str) -> bool:
    """True when ``/pkg.Service/Method`` takes a request with a string ``job_id`` (the job it is about)."""
    service, _, name = method.lstrip("/").rpartition("/")
    if service.startswith("genmesh.library."):  # any server answers it, for every service's jobs
        return False
    try:
        rpc = descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]
    except KeyError:
        return False
    field = rpc.input_type.fields_by_name.get("job_id")
    return field is not None and field.type == field.TYPE_STRING and not rpc.client_streaming


class ForwardingInterceptor(HandlerInterceptor):
    """Installed after the error interceptor, so forwarded calls are logged and mapped like any other."""

    def __init__(self, service: str, ids: JobIds, peers: Peers, tls: TlsFiles | None = None) -> None:
        self.service = service  # "text": for messages
        self.ids = ids
        self.peers = peers
        self.tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if not self.peers.configured:
            return handler
        if method.endswith("/ListJobs"):
            return rewrapped(handler, unary=functools.partial(self._list, method=method))
        if not addresses_job(method):
            return handler
        # Local answers are messages, forwarded ones the owner's bytes: serialize only the former.
        original = handler.response_serializer
        serialize = (lambda message: message if type(message) is bytes else original(message)) if original else None
        return rewrapped(
            handler,
            unary=functools.partial(self._unary, method=method),
            stream=functools.partial(self._stream, method=method),
            response_serializer=serialize,
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    # -- deciding -------------------------------------------------------------------------------
    def _owner(self, request: Any, context: grpc.aio.ServicerContext) -> tuple[int, str] | None:
        """(replica, address) when the call must go to another replica; None to answer it here."""
        if any(key == FORWARDED for key, _ in context.invocation_metadata() or ()):
            return None
        owner = job_owner(request.job_id)
        if owner is None or owner.replica == self.ids.replica:
            return None
        address = self.peers.address(owner.replica)
        return (owner.replica, address) if address is not None else None

    def _metadata(self, context: grpc.aio.ServicerContext) -> list[tuple[str, str]]:
        passed = [(key, value) for key, value in context.invocation_metadata() or () if key in caller.PASSED_ON]
        return [*passed, (FORWARDED, f"{self.service}-{self.ids.replica}")]

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            options = [*MESSAGE_SIZE_OPTIONS, *RECONNECT_OPTIONS]
            channel = (
                grpc.aio.insecure_channel(address, options=options)
                if self.tls is None
                else grpc.aio.secure_channel(address, self.tls.channel_credentials(), options=options)
            )
            self._channels[address] = channel
        return channel

    def _unavailable(self, job_id: str, replica: int, address: str) -> Unavailable:
        return Unavailable(
            # Not the transport's words ("failed to connect ..."): a client would take them for its own link.
            f"job {job_id} runs on {self.service} replica {replica} ({address}), "
            "which is down or restarting; a job that finished there is answered from the object store once recorded"
        )

    @staticmethod
    async def _relay_error(context: grpc.aio.ServicerContext, error: grpc.aio.AioRpcError) -> None:
        """The owner's error, as it sent it (code, message and the rich-status details)."""
        details = [(key, value) for key, value in error.trailing_metadata() or () if key == "grpc-status-details-bin"]
        await context.abort(error.code(), error.details() or "", tuple(details))

    # -- unary (GetJob, CancelJob, ...) -----------------------------------------------------------
    def _unary(self, behaviour: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            owner = self._owner(request, context)
            if owner is None:
                return await behaviour(request, context)
            replica, address = owner
            call = self._channel(address).unary_unary(method)  # bytes in, bytes out
            remaining = context.time_remaining()
            timeout = UNARY_TIMEOUT_SECONDS if remaining is None else min(remaining, UNARY_TIMEOUT_SECONDS)
            try:
                response = await call(request.SerializeToString(), metadata=self._metadata(context), timeout=timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    await self._relay_error(context, error)
                log.warning("peer_unreachable", replica=replica, address=address, error=error.details())
                try:  # the job's terminal record, if it finished
                    return await behaviour(request, context)
                except NotFound:
                    raise self._unavailable(request.job_id, replica, address) from None
            log.info("rpc_forwarded", replica=replica, address=address)
            return response

        return handle

    # -- ListJobs: every replica's live jobs ---------------------------------------------------------
    def _list(self, behaviour: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if any(key == FORWARDED for key, _ in context.invocation_metadata() or ()):
                job_listing.answering_peer.set(True)
            else:
                job_listing.peer_live_jobs.set(lambda: self._peer_lists(method, request, context))
            return await behaviour(request, context)

        return handle

    async def _peer_lists(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> list[bytes]:
        count = self.peers.count() or TEMPLATE_FAN_OUT
        others = [(replica, self.peers.address(replica)) for replica in range(count) if replica != self.ids.replica]

        async def ask(replica: int, address: str) -> bytes | None:
            try:
                return await self._channel(address).unary_unary(method)(
                    request.SerializeToString(), metadata=self._metadata(context), timeout=LIST_TIMEOUT_SECONDS
                )
            except grpc.aio.AioRpcError as error:
                log.warning("peer_not_listed", replica=replica, address=address, error=error.details())
                return None

        answers = await asyncio.gather(*(ask(replica, address) for replica, address in others if address))
        return [answer for answer in answers if answer is not None]

    # -- server streaming (WatchJob, WatchTrainingJob) --------------------------------------------------------
    def _stream(self, behaviour: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            owner = self._owner(request, context)
            if owner is None:
                async for message in behaviour(request, context):
                    yield message
                return
            replica, address = owner
            call = self._channel(address).unary_stream(method)(
                request.SerializeToString(), metadata=self._metadata(context), timeout=context.time_remaining()
            )
            relayed = 0
            try:
                async for message in call:
                    relayed += 1
                    yield message
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    await self._relay_error(context, error)
                if relayed:
                    raise Unavailable(
                        f"{self.service} replica {replica} ({address}), which runs job {request.job_id}, went away "
                        "while streaming it"
                    ) from None
                log.warning("peer_unreachable", replica=replica, address=address, error=error.details())
                try:
                    async for message in behaviour(request, context):
                        yield message
                except NotFound:
                    raise self._unavailable(request.job_id, replica, address) from None
            finally:
                call.cancel()  # the caller went away: stop the owner's stream too

        return handle
