"""The wiring most services share: one job queue (one worker per device) named from the service's
declaration (``genmesh.services``), the object store, buckets ensured at start. A service adds its
engine, registers its servicer, and says how it warms up and closes."""

from __future__ import annotations

import asyncio

from genmesh.services import BY_NAME
from servers.runtime.queue import JobQueue
from servers.runtime.settings import ServerSettings
from storage.object_store import ObjectStore


class QueuedService:
    def __init__(self, name: str, settings: ServerSettings, devices: list[str]) -> None:
        info = BY_NAME[name]
        self.name = name
        self.service_names = (info.proto_service,)
        self.settings = settings
        self.queue = JobQueue(
            name=name,
            id_prefix=info.job_prefixes[0],
            devices=devices,
            max_queued=settings.max_queued,
            retention_seconds=settings.job_retention_seconds,
            service=info.proto_service,
            ids=settings.job_ids(),
        )
        self.queues = (self.queue,)
        self.store = ObjectStore(settings.storage())

    async def start(self) -> None:
        await asyncio.to_thread(self.store.ensure_buckets)
        await self.warm_up()

    async def warm_up(self) -> None:
        """Load what the first request needs (health turns SERVING after this)."""

    async def close(self) -> None:
        return None
