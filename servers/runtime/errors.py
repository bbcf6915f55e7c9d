"""Library exceptions that mean something to a caller, mapped to genmesh errors (the one table of
codes is ``genmesh.errors``); anything else is INTERNAL, its details only in the server log."""

from __future__ import annotations

from genmesh.errors import GenmeshError, Internal, ResourceExhausted
from servers.compute.memory import is_out_of_memory


def as_genmesh_error(exc: BaseException) -> GenmeshError:
    if isinstance(exc, GenmeshError):
        return exc
    if is_out_of_memory(exc):
        return ResourceExhausted("the device ran out of memory; try smaller sizes or batches, or a low-memory mode")
    return Internal(f"internal error ({type(exc).__name__}); see the server log")
