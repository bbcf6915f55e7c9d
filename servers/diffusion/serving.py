"""The gRPC side the Image and Video servers share: the service wiring (engine options from the
settings, preload on the job worker, close) and the servicer's job submission and model listing.
Each server keeps only what differs: its job, its proto, its model labels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from genmesh.common.v1 import model_pb2
from servers.compute.compile import CompileOptions, prepare_compiling
from servers.diffusion.catalog import CatalogEntry
from servers.diffusion.compiled import parse_shapes
from servers.diffusion.engine import DiffusionEngine
from servers.diffusion.lora import LoraCatalog
from servers.diffusion.settings import DiffusionSettings
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import JobContext, JobQueue
from servers.runtime.service import QueuedService
from servers.runtime.streaming import stream_job
from storage.object_store import ObjectStore


def engine_options(settings: DiffusionSettings, **warmup: int) -> dict[str, Any]:
    """The engine's keyword arguments from the server's settings; compilation's cache is set up
    first (``warmup``: ``parse_shapes`` options, e.g. Video's default frame count)."""
    compile = CompileOptions(settings.compile, settings.compile_mode)
    prepare_compiling(compile, settings.resolved_compile_cache_dir())
    return {
        "cache_dir": settings.cache_dir(),
        "device": settings.device,
        "memory_mode": settings.memory_mode,
        "keep_alive_seconds": settings.keep_alive_seconds,
        "threads": settings.threads,
        "max_pixels": settings.max_pixels,
        "compile": compile,
        "compile_warmup": parse_shapes(settings.compile_warmup, **warmup),
        "loras": LoraCatalog(settings.resolved_loras_dir()),
        "lora_budget_bytes": settings.lora_budget_mb * 1024 * 1024,
    }


class DiffusionService(QueuedService):
    """An Image or Video server: its queue runs on the engine's device; the default model is loaded
    before health turns SERVING (unless ``preload`` is off) and unloaded on close."""

    def __init__(self, name: str, settings: DiffusionSettings, engine: DiffusionEngine) -> None:
        super().__init__(name, settings, devices=[engine.device_label])
        self.engine = engine
        self.preload = settings.preload

    async def warm_up(self) -> None:
        if self.preload:
            # On the worker thread that runs the jobs: one torch thread team (see JobQueue.call_on_worker).
            await asyncio.wrap_future(self.queue.call_on_worker(self.engine.preload))

    async def close(self) -> None:
        self.engine.close()


class PreparedJob(Protocol):
    def run(self, context: JobContext) -> Any: ...


class DiffusionServicer(JobRpcs):
    """Submits prepared jobs and lists models; the shared job RPCs come from ``JobRpcs``."""

    def __init__(self, engine: DiffusionEngine, queue: JobQueue, store: ObjectStore) -> None:
        self.engine = engine
        self.queue = queue
        self.store = store
        self.keep_terminal_records()

    async def submit(self, prepare: Callable[[], PreparedJob], method: str, detach: bool) -> AsyncIterator[Any]:
        """``prepare`` runs off the event loop and refuses what it can before queueing (unknown names,
        bad inputs, budgets); then the job's events, as this service's stream messages."""
        work = await asyncio.to_thread(prepare)
        job = self.queue.submit(work.run, method=method, detached=detach)
        async for event in stream_job(self.queue, job, self.watch_message):
            yield event

    def model_info(
        self,
        entry: CatalogEntry,
        labels: Mapping[str, str],
        *,
        loaded: bool,
        is_default: bool,
        defaults: model_pb2.GenerationDefaults | None = None,
    ) -> model_pb2.ModelInfo:
        """A catalog entry as ListModels answers it: the service's labels, then what every diffusion
        model carries (keep-alive, device, location, the smoke-test flag); empty labels left out."""
        labels = {
            **labels,
            "keep_alive_seconds": str(self.engine.models.keep_alive_seconds),
            "device": self.engine.device_label,
            "location": entry.location,
            "smoke_test": "true" if entry.smoke_test else "",
        }
        return model_pb2.ModelInfo(
            name=entry.name,
            description=entry.description,
            source=str(entry.source),
            size_bytes=entry.size_bytes,
            loaded=loaded,
            is_default=is_default,
            labels={key: value for key, value in labels.items() if value},
            defaults=defaults,
        )
