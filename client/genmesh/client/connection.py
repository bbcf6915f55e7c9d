"""Connection settings and the gRPC -> genmesh.errors translation shared by both clients."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from genmesh import errors

DEFAULT_URL = "127.0.0.1:8080"
# Generated images and videos can be large; match the servers' and gateway's limits.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class Connection:
    """Where the gateway is and the key to use. ``url`` is host:port (an http:// prefix is accepted)."""

    url: str = DEFAULT_URL
    api_key: str | None = field(default=None, repr=False)
    secure: bool = False

    @classmethod
    def resolve(cls, url: str | None, api_key: str | None, secure: bool | None = None) -> Connection:
        """Explicit arguments first, then GENMESH_URL / GENMESH_API_KEY, then the local default."""
        raw = url or os.environ.get("GENMESH_URL") or DEFAULT_URL
        is_tls = raw.startswith("https://") if secure is None else secure
        target = raw.removeprefix("http://").removeprefix("https://").rstrip("/")
        return cls(target, api_key or os.environ.get("GENMESH_API_KEY") or None, is_tls)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.api_key),) if self.api_key else ()


def error_field(error: grpc.RpcError) -> str | None:
    """The request field a failed call names: the first ``google.rpc.BadRequest`` field violation in
    the rich status (``grpc-status-details-bin``), or None when there is none or it is unreadable."""
    if not hasattr(error, "trailing_metadata"):
        return None
    try:
        status = rpc_status.from_call(error)
    except Exception:  # a malformed or inconsistent detail must not hide the error itself
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            for violation in bad_request.field_violations:
                if violation.field:
                    return violation.field
    return None


# What the gateway and the gRPC transport say when a server is down or died mid-call.
_GATEWAY_DOWN = ("no healthy upstream", "upstream connect error")
_UNREACHABLE = ("failed to connect to all addresses", "dns resolution failed")
_STREAM_CUT = ("rst_stream", "stream removed", "connection reset")


def service_of(stub: Any) -> str:
    """``image`` for an ``ImageServiceStub`` (from the service declarations)."""
    from genmesh.services import SERVICES

    proto_name = type(stub).__name__.removesuffix("Stub")
    return next((info.name for info in SERVICES if info.proto_service.endswith("." + proto_name)), proto_name)


def translate(error: grpc.RpcError, service: str | None = None) -> errors.GenmeshError:
    """The typed exception for a failed call (its message is the server's, never a traceback), with
    ``field`` set from the status details when the server named one. A server that is down or died
    mid-call (restarting) is UNAVAILABLE naming ``service``, not the transport's bare INTERNAL."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    name = code.name if code is not None else "UNKNOWN"
    lowered = (details or "").lower()
    who = f"the {service} server" if service else "the server"
    if name == "INTERNAL" and any(marker in lowered for marker in _STREAM_CUT):
        return errors.Unavailable(f"{who} went away during the call (it is being restarted); retry shortly")
    if name == "UNAVAILABLE" and any(marker in lowered for marker in _UNREACHABLE):
        return errors.Unavailable(
            "cannot reach the genmesh gateway (is `genmesh up` running, and --url / GENMESH_URL right?)"
        )
    if name == "UNAVAILABLE" and any(marker in lowered for marker in _GATEWAY_DOWN):
        return errors.Unavailable(errors.service_down_message(service))
    if name == "UNKNOWN":
        return errors.Internal(details or "unknown error")
    return errors.from_code(name, details or name, error_field(error))
