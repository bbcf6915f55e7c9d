"""What genmesh's server interceptors share: each may put a wrapper around a method's behaviour,
keeping its (de)serializers. genmesh has unary and server-streaming RPCs only."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]
_KEEP: Any = object()


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """Hands each method's handler to ``wrap``, which answers it as it is or ``rewrapped``."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        return handler if handler is None else self.wrap(handler, details.method)

    @abc.abstractmethod  # grpc.aio.ServerInterceptor is an ABC: a subclass without it cannot be made
    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler to serve ``method`` with: ``handler`` itself, or ``rewrapped(handler, ...)``."""


def rewrapped(
    handler: grpc.RpcMethodHandler,
    *,
    unary: Wrap | None = None,
    stream: Wrap | None = None,
    response_serializer: Callable[[Any], bytes] | None = _KEEP,
) -> grpc.RpcMethodHandler:
    """``handler`` with its unary behaviour passed through ``unary`` or its server-streaming one
    through ``stream`` (the request deserializer kept, the response serializer unless one is given);
    a handler of a kind not wrapped is answered as it is."""
    serializer = handler.response_serializer if response_serializer is _KEEP else response_serializer
    if handler.unary_unary and unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=serializer,
        )
    if handler.unary_stream and stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=serializer,
        )
    return handler
