"""Protobuf <-> models domain types."""

from __future__ import annotations

from dataclasses import dataclass

from genmesh.models.v1 import models_pb2
from servers.models.download import Tick
from servers.models.engine import Deleted, Pulled, PullRequest
from servers.models.kinds import Kind
from servers.runtime import convert as common
from servers.runtime import events
from servers.runtime.queue import Job

KINDS = {Kind.TEXT: models_pb2.MODEL_KIND_TEXT, Kind.IMAGE: models_pb2.MODEL_KIND_IMAGE,
         Kind.MOTION: models_pb2.MODEL_KIND_MOTION}  # fmt: skip
KIND_NAMES = {value: kind for kind, value in KINDS.items()}


@dataclass(frozen=True)
class PullStatus(events.Payload):
    """A phase change or download progress of a pull."""

    phase: str  # "resolve", "download", "verify", "install"
    file_name: str
    tick: Tick | None = None


def pull_request(request: models_pb2.PullModelRequest) -> PullRequest:
    return PullRequest(request.ref, request.no_verify, request.allow_pickle, request.name.strip())


def kind(value: int) -> Kind | None:
    """``MODEL_KIND_UNSPECIFIED`` -> None (any kind)."""
    return KIND_NAMES.get(value)


def pull_result(pulled: Pulled) -> models_pb2.PullResult:
    return models_pb2.PullResult(
        name=pulled.name,
        kind=KINDS[pulled.kind],
        path=str(pulled.path),
        sha256=pulled.sha256,
        size_bytes=pulled.size_bytes,
        verified=pulled.verified,
        digest_source=pulled.digest_source,
        url=pulled.url,
        already_present=pulled.already_present,
        resumed_bytes=pulled.resumed_bytes,
        family=pulled.family,
    )


def pull_progress(status: PullStatus) -> models_pb2.PullProgress:
    tick = status.tick
    message = models_pb2.PullProgress(
        phase=models_pb2.PullPhase.Value(f"PULL_PHASE_{status.phase.upper()}"), file_name=status.file_name
    )
    if tick is not None:
        message.bytes_done, message.bytes_total, message.retries = tick.bytes_done, tick.bytes_total, tick.retries
        message.bytes_per_second, message.eta_seconds = tick.bytes_per_second, tick.eta_seconds
    return message


def deleted(result: Deleted) -> models_pb2.DeleteModelResponse:
    return models_pb2.DeleteModelResponse(path=str(result.path), kind=KINDS[result.kind], size_bytes=result.size_bytes)


def stream_event(job: Job, event: events.JobEvent) -> models_pb2.PullModelResponse:
    fields = common.common_event_fields(job, event)
    match event:
        case events.Output(payload=PullStatus() as status):
            fields["pull_progress"] = pull_progress(status)
        case events.Succeeded(result=result):
            fields["result"] = result
    return models_pb2.PullModelResponse(**fields)


def job_message(job: Job) -> models_pb2.Job:
    return models_pb2.Job(status=common.job_status(job), result=job.result)
