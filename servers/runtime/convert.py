"""Conversions between runtime types and the genmesh.common.v1 messages every service shares."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from genmesh.client.requests import SCHEDULERS as SCHEDULER_NAMES
from genmesh.common.v1 import artifact_pb2, diffusion_pb2, job_pb2, model_pb2
from genmesh.errors import require_range
from servers.diffusion import params as spec
from servers.diffusion.lora import LoraRequest, requested_loras  # torch-free: text and agent servers import this
from servers.diffusion.params import Defaults, refuse, require
from servers.diffusion.sampling import SamplingParams
from servers.runtime import events
from servers.runtime.queue import Job
from storage.keys import validate_bucket, validate_key
from storage.object_store import ObjectLocation, StoredObject

STATES = {
    events.JobState.QUEUED: job_pb2.JOB_STATE_QUEUED,
    events.JobState.RUNNING: job_pb2.JOB_STATE_RUNNING,
    events.JobState.SUCCEEDED: job_pb2.JOB_STATE_SUCCEEDED,
    events.JobState.FAILED: job_pb2.JOB_STATE_FAILED,
    events.JobState.CANCELLED: job_pb2.JOB_STATE_CANCELLED,
}


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def progress_message(progress: events.Progress | None) -> job_pb2.Progress | None:
    if progress is None:
        return None
    message = job_pb2.Progress(
        step=progress.step,
        total_steps=progress.total_steps,
        fraction=progress.fraction,
        eta_seconds=progress.eta_seconds,
        elapsed_seconds=progress.elapsed_seconds,
    )
    if progress.preview is not None:
        preview = progress.preview
        message.preview.CopyFrom(
            job_pb2.Preview(
                data=preview.data, content_type=preview.content_type, width=preview.width, height=preview.height
            )
        )
    return message


def job_status(job: Job) -> job_pb2.JobStatus:
    return job_pb2.JobStatus(
        job_id=job.id,
        state=STATES[job.state],
        queue_position=job.queue_position if job.state is events.JobState.QUEUED else 0,
        progress=progress_message(job.progress),
        error=job_pb2.JobError(code=job.error.code, message=job.error.message) if job.error else None,
        cancelled=job_pb2.Cancelled(reason=job.cancel_reason) if job.cancel_reason else None,
        create_time=timestamp(job.created_at),
        start_time=timestamp(job.started_at),
        end_time=timestamp(job.ended_at),
        detached=job.detached,
        method=job.method,
        client_id=job.owner,
        parent_job_id=job.parent,
    )


def common_event_fields(job: Job, event: events.JobEvent) -> dict[str, Any]:
    """The envelope fields of a stream event that every service shares, as message constructor kwargs.

    Service-specific events (``Output``, ``Succeeded``) are left to the caller."""
    fields: dict[str, Any] = {"job_id": job.id, "state": STATES[job.state]}
    match event:
        case events.Queued(position):
            fields["queued"] = job_pb2.Queued(queue_position=position)
            fields["state"] = job_pb2.JOB_STATE_QUEUED
        case events.Started(queued_seconds):
            fields["started"] = job_pb2.Started(queued_seconds=queued_seconds)
            fields["state"] = job_pb2.JOB_STATE_RUNNING
        case events.ProgressEvent(progress):
            fields["progress"] = progress_message(progress)
            fields["state"] = job_pb2.JOB_STATE_RUNNING
        case events.Output(progress=progress):
            fields["progress"] = progress_message(progress)
            fields["state"] = job_pb2.JOB_STATE_RUNNING
        case events.Succeeded():
            fields["state"] = job_pb2.JOB_STATE_SUCCEEDED
            fields["progress"] = progress_message(job.progress)
        case events.Failed(code, message):
            fields["error"] = job_pb2.JobError(code=code, message=message)
            fields["state"] = job_pb2.JOB_STATE_FAILED
        case events.CancelledEvent(reason):
            fields["cancelled"] = job_pb2.Cancelled(reason=reason)
            fields["state"] = job_pb2.JOB_STATE_CANCELLED
    return fields


def message_dict(message: Any) -> dict[str, Any]:
    """A message as the JSON-ready dict stored in records (proto field names, as REST shows them)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


MAX_KEEP_ALIVE_SECONDS = 86_400


def keep_alive_seconds(message: Any) -> int | None:
    """A generation request's ``keep_alive_seconds``: None when unset, else checked to -1..86400."""
    if not message.HasField("keep_alive_seconds"):
        return None
    value = message.keep_alive_seconds
    require_range(value, "keep_alive_seconds", -1, MAX_KEEP_ALIVE_SECONDS)
    return value


def stage_value(stage_enum: Any, stage: str) -> int:
    """A service's proto ``Stage`` value for a ``StageChanged.stage`` name (``"saving"`` ->
    ``STAGE_SAVING``); one mapping by name for every service, so no per-service stage tables."""
    return stage_enum.Value(f"STAGE_{stage.upper()}")


def artifact(stored: StoredObject | None, data: bytes | None = None) -> artifact_pb2.Artifact | None:
    if stored is None:
        return None
    return artifact_pb2.Artifact(**dataclasses.asdict(stored), data=data or b"")  # the same fields by name


# -- the diffusion services (Image, Video) ------------------------------------------------------
# proto enum value -> scheduler name used by servers.diffusion (and back): the client's one table,
# read from the proto enum.
SCHEDULERS: dict[int, str] = {diffusion_pb2.Scheduler.Value(enum): name for name, enum in SCHEDULER_NAMES.items()}
SCHEDULER_ENUMS = {name: value for value, name in SCHEDULERS.items()}


def scheduler_name(value: int, field: str = "scheduler") -> str | None:
    """A request's ``Scheduler`` value -> its name; ``None`` for unspecified (the model's own)."""
    if value == diffusion_pb2.SCHEDULER_UNSPECIFIED:
        return None
    if value not in SCHEDULERS:
        raise refuse(field, f"must be one of {', '.join(SCHEDULER_NAMES)} (got {value})")
    return SCHEDULERS[value]


def diffusion_fields(message: Any, limits: Mapping[str, spec.Limit | spec.Text]) -> dict[str, Any]:
    """A GenerateImage or GenerateVideo request's shared fields (``DiffusionRequest``'s, but the init
    image and strength, whose rules differ), each checked against the service's ``limits``; unset
    numbers stay ``None``, the model's defaults are chosen at ``prepare``."""
    spec.check(limits, "prompt", message.prompt)
    spec.check(limits, "negative_prompt", message.negative_prompt)
    scheduler = scheduler_name(message.scheduler)
    spec.check(limits, "preview_interval_steps", message.preview_interval_steps)
    prompt, loras = requested_loras(message.prompt, lora_requests(message.loras))
    numbers = ("width", "height", "steps", "guidance_scale", "seed")
    return {
        "prompt": prompt,
        "model": message.model,
        "negative_prompt": message.negative_prompt,
        **{name: spec.optional(limits, message, name) for name in numbers},
        "scheduler": scheduler,
        "return_inline": message.return_inline,
        "preview_interval_steps": message.preview_interval_steps,
        "keep_alive_seconds": keep_alive_seconds(message),
        "loras": loras,
    }


MEMORY_MODES = {"full": diffusion_pb2.MEMORY_MODE_FULL, "lowvram": diffusion_pb2.MEMORY_MODE_LOW_VRAM}


def run_parameters(params: SamplingParams, loaded: Any, defaults_note: str) -> dict[str, Any]:
    """What ``ImageParameters`` and ``VideoParameters`` share, from the run's parameters (every
    default filled) and how its model was loaded (``servers.diffusion.engine.Loaded``)."""
    return {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "width": params.width or 0,
        "height": params.height or 0,
        "steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "scheduler": SCHEDULER_ENUMS.get(params.scheduler or "", diffusion_pb2.SCHEDULER_UNSPECIFIED),
        "seed": params.seed,
        "strength": params.strength,
        "memory_mode": MEMORY_MODES.get(loaded.memory_mode, diffusion_pb2.MEMORY_MODE_UNSPECIFIED),
        "device": loaded.device,
        "loras": applied_loras(params.loras),
        "defaults_note": defaults_note,
    }


def generation_defaults(defaults: Defaults, native_side: int = 0) -> model_pb2.GenerationDefaults:
    """ListModels' ``defaults`` of a diffusion model (``native_side``: the family's size, 0 unknown)."""
    side = defaults.side or native_side
    return model_pb2.GenerationDefaults(
        width=side, height=side, steps=defaults.steps, guidance_scale=defaults.guidance_scale,
        num_frames=defaults.num_frames, note=defaults.note,
    )  # fmt: skip


def lora_requests(messages: Any) -> list[LoraRequest]:
    """``repeated LoraWeight`` -> LoRA requests (an unset weight is 1.0); checked with the prompt's
    by ``servers.diffusion.lora.requested_loras``."""
    return [LoraRequest(item.name, item.weight if item.HasField("weight") else 1.0) for item in messages]


def applied_loras(loras: Any) -> list[diffusion_pb2.AppliedLora]:
    """The LoRAs a run applied (``servers.diffusion.lora.ResolvedLora``) as result messages."""
    return [
        diffusion_pb2.AppliedLora(
            name=lora.file.name, weight=lora.weight, sha256=lora.file.sha256, from_prompt=lora.from_prompt
        )
        for lora in loras
    ]


def model_state(loaded: bool, location: str) -> model_pb2.ModelState.ValueType:
    """Where a model stands, one rule for every service's ListModels: in memory, else what its first
    use waits for (a load; a download first when only the object store holds it)."""
    if loaded:
        return model_pb2.MODEL_STATE_LOADED
    if location == "store":
        return model_pb2.MODEL_STATE_NOT_DOWNLOADED
    return model_pb2.MODEL_STATE_LOADS_ON_FIRST_USE


def lora_infos(catalog: Any) -> list[model_pb2.ModelInfo]:
    """ListModels entries for a ``servers.diffusion.lora.LoraCatalog``: kind "lora", the family each
    fits and its layout, read from the file; an unreadable file is listed with its "problem"."""
    infos = []
    for name, path, file, problem in catalog.entries():
        labels = {"kind": "lora"}
        if file is not None:
            labels.update(family=file.family.value, layout=file.layout, sha256=file.sha256)
        else:
            labels["problem"] = problem
        infos.append(
            model_pb2.ModelInfo(
                name=name,
                description=f"LoRA {path.name}" + (f" for {file.family.value} models" if file else " (unreadable)"),
                source=str(path),
                size_bytes=path.stat().st_size if path.exists() else 0,
                labels=labels,
                # Read into a model on its first use with it (which model holds which is not told).
                state=model_state(False, "local"),
            )
        )
    return infos


def object_ref(location: ObjectLocation | None) -> artifact_pb2.ObjectRef | None:
    """A stored object's place as the protos name it (None stays unset)."""
    return artifact_pb2.ObjectRef(bucket=location.bucket, key=location.key) if location else None


def object_location(ref: artifact_pb2.ObjectRef, field: str) -> ObjectLocation:
    """A request's ``ObjectRef``, its bucket and key checked (INVALID_ARGUMENT naming ``field.bucket``/``.key``)."""
    validate_bucket(ref.bucket, f"{field}.bucket")
    return ObjectLocation(ref.bucket, validate_key(ref.key, f"{field}.key"))


def media_input(message: Any, chosen: str | None, name: str) -> tuple[bytes | None, ObjectLocation | None]:
    """An input sent inline (``<name>_data``, not empty) or as a stored object (``<name>_ref``), when
    ``chosen`` (the oneof's field, ``WhichOneof``) is one of the two; else ``(None, None)``."""
    if chosen == f"{name}_data":
        data = getattr(message, chosen)
        require(len(data) > 0, chosen, "must not be empty")
        return data, None
    if chosen == f"{name}_ref":
        return None, object_location(getattr(message, chosen), chosen)
    return None, None
