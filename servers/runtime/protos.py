"""Message types by proto name, from the descriptor pool every server loads (all genmesh protos)."""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pool, message_factory


@functools.cache
def returned_type(service: str, method: str) -> type:
    """The message class ``method`` of ``service`` ("genmesh.image.v1.ImageService") returns (or streams)."""
    rpc = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    return message_factory.GetMessageClass(rpc.output_type)
