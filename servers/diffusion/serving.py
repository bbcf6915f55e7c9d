"""The gRPC side the Image and Video servers share: the service wiring (engine options from the
settings, preload on the job worker, close) and the servicer: its Generate RPC, ListModels, and the
job and stream messages. Each server keeps only what differs: its request parser, its job, its
model entries and labels. Their protos name the same messages alike (``Job``, ``ProgressUpdate``,
``Stage``, ``ListModelsResponse``, ``<Method>Response``), so one servicer builds both."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from types import ModuleType
from typing import Any, ClassVar, Protocol

from genmesh.common.v1 import model_pb2
from servers.compute.compile import CompileOptions, prepare_compiling
from servers.diffusion.catalog import CatalogEntry
from servers.diffusion.compiled import parse_shapes
from servers.diffusion.engine import DiffusionEngine
from servers.diffusion.lora import LoraCatalog
from servers.diffusion.settings import DiffusionSettings
from servers.runtime import convert as common
from servers.runtime import events
from servers.runtime.job_rpcs import JobRpcs
from servers.runtime.queue import Job, JobContext, JobQueue
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


class Generation:
    """A diffusion service's Generate RPC, declared by its servicer as
    ``GenerateImage = Generation(image_pb2, convert.generate_image_request, ImageJob.prepare)``:
    the attribute's name is the method's, ``protos`` the service's generated messages.

    ``parse`` checks the request (presence, oneofs, ranges: INVALID_ARGUMENT naming the field);
    ``prepare(request, engine, store)`` runs off the event loop and refuses what it can before
    queueing (unknown names, bad inputs, budgets); then the job's events, as stream messages."""

    def __init__(
        self, protos: ModuleType, parse: Callable[[Any], Any], prepare: Callable[[Any, Any, ObjectStore], PreparedJob]
    ) -> None:
        self.protos = protos
        self.parse = parse
        self.prepare = prepare
        self.method = ""
        self.response: type = object

    def __set_name__(self, owner: type[DiffusionServicer], name: str) -> None:
        self.method = name
        self.response = getattr(self.protos, f"{name}Response")
        # The servicer's job, stream and ListModels messages are this service's.
        owner.protos, owner.response = self.protos, self.response

    def __get__(self, servicer: DiffusionServicer | None, owner: type | None = None) -> Any:
        return self if servicer is None else functools.partial(self.rpc, servicer)

    async def rpc(self, servicer: DiffusionServicer, request: Any, context: Any) -> AsyncIterator[Any]:
        prepare = functools.partial(self.prepare, self.parse(request), servicer.engine, servicer.store)
        work = await asyncio.to_thread(prepare)
        job = servicer.queue.submit(work.run, method=self.method, detached=request.detach)
        async for event in stream_job(servicer.queue, job, servicer.watch_message):
            yield event


class DiffusionServicer(JobRpcs):
    """One ``Generation``, ListModels over ``model_infos`` and the LoRAs, and the job and stream
    messages; the shared job RPCs come from ``JobRpcs``."""

    protos: ClassVar[ModuleType]  # set by the servicer's ``Generation``
    response: ClassVar[type]  # its stream's message

    def __init__(self, engine: DiffusionEngine, queue: JobQueue, store: ObjectStore) -> None:
        self.engine = engine
        self.queue = queue
        self.store = store
        self.keep_terminal_records()

    def job_message(self, job: Job) -> Any:
        return self.protos.Job(status=common.job_status(job), result=job.result)

    def watch_message(self, job: Job, event: events.JobEvent) -> Any:
        """One stream event: the shared envelope, a ``ProgressUpdate`` for each denoising step and
        stage (with the frames decoded of how many, where the stage counts them), the result."""
        protos = self.protos
        fields = common.common_event_fields(job, event)
        match event:
            case events.ProgressEvent():
                fields["progress_update"] = protos.ProgressUpdate(stage=protos.STAGE_DENOISING)
            case events.Output(payload=events.StageChanged(stage=stage, done=done, total=total)):
                counted = {"frames_decoded": done, "total_frames": total} if total else {}
                fields["progress_update"] = protos.ProgressUpdate(
                    stage=common.stage_value(protos.Stage, stage), **counted
                )
            case events.Succeeded(result=result):
                fields["result"] = result
        return self.response(**fields)

    async def ListModels(self, request: Any, context: Any) -> Any:
        infos = await asyncio.to_thread(self.model_infos)
        infos += await asyncio.to_thread(common.lora_infos, self.engine.loras)
        return self.protos.ListModelsResponse(models=infos)

    def model_infos(self) -> list[model_pb2.ModelInfo]:
        """The service's models as ListModels lists them (LoRAs are added after); off the event loop."""
        raise NotImplementedError

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
            state=common.model_state(loaded, entry.location),
            is_default=is_default,
            labels={key: value for key, value in labels.items() if value},
            defaults=defaults,
        )
