"""Typed Python clients for genmesh: ``GenmeshClient`` (sync) and ``AsyncGenmeshClient`` (asyncio).

    from genmesh.client import GenmeshClient

    with GenmeshClient("127.0.0.1:8080", api_key="...") as client:
        for event in client.text.stream_generate("Once upon a time", max_tokens=32):
            print(event.delta.text, end="", flush=True)

Streams yield the generated protobuf events; blocking calls return the final result. Error
statuses become ``genmesh.errors`` exceptions (``InvalidArgument``, ``Unauthenticated``, ...).
"""

from genmesh.client.aio import AsyncGenmeshClient
from genmesh.client.sync import GenmeshClient

__all__ = ["AsyncGenmeshClient", "GenmeshClient"]
