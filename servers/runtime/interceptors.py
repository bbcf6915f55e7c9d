"""The one server interceptor: binds request context for logs and maps exceptions to gRPC status.

It wraps unary and streaming handlers alike. Typed ``GenmeshError``s keep their code and message;
anything else is logged with its traceback and reaches the caller as a short INTERNAL message.

An error that names a request ``field`` also carries it in the rich status (``grpc-status-details-bin``)
as a standard ``google.rpc.BadRequest`` with one ``FieldViolation`` (field, description = the message),
so clients read the field without parsing the message. NOT_FOUND uses BadRequest too: its ``field`` is
the request field that names the missing thing (``model``, ``init_image_ref``), which is what a
FieldViolation holds; ``google.rpc.ResourceInfo`` describes the resource (type, name, owner) and has no
place for a request field. INTERNAL errors never carry details.

A request that can create a job and carries ``notify_url`` (or whose key has a default webhook) has
it checked here, before the servicer runs, and bound for ``JobQueue.submit``
(``servers/runtime/webhooks/gate.py``): the one place every service's webhooks are admitted.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from genmesh.errors import GenmeshError, InvalidArgument
from servers.runtime import caller
from servers.runtime.errors import as_genmesh_error
from servers.runtime.handlers import HandlerInterceptor, rewrapped
from servers.runtime.webhooks import gate

log = structlog.get_logger(__name__)

# Health checks and reflection are chatty and uninteresting in access logs.
QUIET_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def status_code(error: GenmeshError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def rich_status(error: GenmeshError) -> grpc.Status | None:
    """The status with a ``google.rpc.BadRequest`` naming ``error.field``; None without a field or for
    INTERNAL (whose details stay in the server log)."""
    if not error.field or error.code == "INTERNAL":
        return None
    violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    code = status_code(error)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=error.message, details=[detail]))


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


class ErrorAndContextInterceptor(HandlerInterceptor):
    def __init__(self, notify_gate: gate.NotifyGate | None = None) -> None:
        self.notify_gate = notify_gate

    async def _admit_webhook(self, request: Any) -> None:
        """Check and bind the request's webhook (a request without a ``notify_url`` field asks none)."""
        gate.bind(None)
        descriptor = getattr(request, "DESCRIPTOR", None)
        if descriptor is None or "notify_url" not in descriptor.fields_by_name:
            return
        if self.notify_gate is None:
            if request.notify_url:
                raise InvalidArgument(
                    "notify_url: webhooks are off on this server (no object store to keep deliveries in)",
                    field="notify_url",
                )
            return
        gate.bind(await self.notify_gate.admit(request.notify_url, caller.current()))

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if method.startswith(QUIET_PREFIXES):
            return handler
        return rewrapped(
            handler,
            unary=functools.partial(self._wrap_unary, method=method),
            stream=functools.partial(self._wrap_stream, method=method),
        )

    @staticmethod
    def _bind(context: grpc.aio.ServicerContext, method: str) -> None:
        metadata = _metadata(context)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=metadata.get("x-request-id") or uuid.uuid4().hex,
            client_id=metadata.get(caller.CLIENT_HEADER, "direct"),
            rpc=method,
        )
        caller.bind(caller.from_headers(metadata))

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, exc: Exception, started: float) -> None:
        error = as_genmesh_error(exc)
        seconds = round(time.monotonic() - started, 4)
        if isinstance(exc, GenmeshError):
            log.info("rpc_error", code=error.code, error=error.message, field=error.field, seconds=seconds)
        else:
            log.error("rpc_crashed", exc_info=exc, seconds=seconds)
        status = rich_status(error)
        if status is None:
            await context.abort(status_code(error), error.message)
        else:
            await context.abort(status.code, status.details, status.trailing_metadata)

    def _wrap_unary(self, behaviour: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self._bind(context, method)
            started = time.monotonic()
            try:
                await self._admit_webhook(request)
                response = await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(context, exc, started)
            log.info("rpc_ok", seconds=round(time.monotonic() - started, 4))
            return response

        return wrapper

    def _wrap_stream(
        self, behaviour: Callable[..., AsyncIterator[Any]], method: str
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self._bind(context, method)
            started = time.monotonic()
            messages = 0
            try:
                await self._admit_webhook(request)
                async for response in behaviour(request, context):
                    messages += 1
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._abort(context, exc, started)
            log.info("rpc_ok", messages=messages, seconds=round(time.monotonic() - started, 4))

        return wrapper
