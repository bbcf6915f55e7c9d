"""The one error table shared by servers, storage and the client.

Domain code raises these (it never imports grpc). The server interceptor turns them into gRPC
status codes by ``code`` name; the client turns status codes back into the same classes, so a
caller catches ``genmesh.errors.InvalidArgument`` whichever side raised it. ``field`` travels too, as
a ``google.rpc.BadRequest`` detail in the rich gRPC status.
"""

from __future__ import annotations

import struct


class GenmeshError(Exception):
    """Base class. ``code`` is the canonical gRPC status name sent to the caller."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidArgument(GenmeshError):
    """The caller sent a value outside its allowed range; ``field`` names it."""

    code = "INVALID_ARGUMENT"


class NotFound(GenmeshError):
    """An unknown job, model or object id."""

    code = "NOT_FOUND"


class FailedPrecondition(GenmeshError):
    """The request is valid but the resource is in the wrong state (e.g. cancelling a finished job)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(GenmeshError):
    """The queue is full, a rate limit hit, or the device ran out of memory."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(GenmeshError):
    """A dependency is down or not ready yet (model loading, object store unreachable, draining)."""

    code = "UNAVAILABLE"


class Cancelled(GenmeshError):
    """The job was cancelled by CancelJob or by its client going away."""

    code = "CANCELLED"


class DeadlineExceeded(GenmeshError):
    code = "DEADLINE_EXCEEDED"


class Unauthenticated(GenmeshError):
    """Missing or wrong API key (raised by the gateway, surfaced by the client)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(GenmeshError):
    code = "PERMISSION_DENIED"


class Internal(GenmeshError):
    """A server-side bug. The caller sees a short message; the traceback stays in the server log."""

    code = "INTERNAL"


BY_CODE: dict[str, type[GenmeshError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        Cancelled,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        Internal,
    )
}


def from_code(code: str, message: str, field: str | None = None) -> GenmeshError:
    """The exception for a status code name (unknown names become ``Internal``), naming ``field`` if given."""
    return BY_CODE.get(code, Internal)(message, field=field)


def service_down_message(service: str | None) -> str:
    """What a caller is told when a service is down or restarting: the same words from the client's
    transport errors and from the gateway's own replies (servers/mesh/envoy.py renders them)."""
    who = f"the {service} server" if service else "the server"
    return f"{who} is not available (down or restarting); retry shortly"


def require(condition: bool, field: str, message: str) -> None:
    """Raise ``InvalidArgument`` naming ``field`` unless ``condition`` holds."""
    if not condition:
        raise InvalidArgument(f"{field}: {message}", field=field)


def require_range(value: float, field: str, low: float, high: float) -> None:
    """Raise ``InvalidArgument`` unless ``low <= value <= high`` (message names field and range)."""
    if not (low <= value <= high):
        raise InvalidArgument(
            f"{field} must be between {shown(low)} and {shown(high)} (got {shown(value)})", field=field
        )


def shown(value: float) -> str:
    """A number as the caller wrote it. A proto ``float`` arrives as the nearest float32 (0.9 becomes
    0.8999999761581421): print the shortest decimal that gives back the same float32, as the caller
    most likely typed it. Whole numbers print without a fraction (2, not 2.0)."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return repr(value)
    if single != value:
        return repr(value)  # a double: its own shortest form
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == value:
            return text
    return repr(value)
