"""The services the agent calls, directly over gRPC with the generated stubs (never through the public
gateway): channels, health checks, and one sub-job's stream with cancellation and error mapping.
Blocking (the job runs in a worker thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmesh.client.connection import CHANNEL_OPTIONS, translate
from genmesh.errors import Cancelled, GenmeshError, Unavailable, from_code
from genmesh.image.v1 import image_pb2, image_pb2_grpc
from genmesh.services import BY_NAME
from genmesh.text.v1 import text_pb2, text_pb2_grpc
from genmesh.video.v1 import video_pb2, video_pb2_grpc
from servers.runtime.channels import RECONNECT_OPTIONS
from servers.runtime.queue import JobContext
from servers.runtime.tls import TlsFiles

log = structlog.get_logger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0
CANCEL_POLL_SECONDS = 0.1
SERVING = health_pb2.HealthCheckResponse.SERVING

_STUBS = {
    "text": text_pb2_grpc.TextServiceStub,
    "image": image_pb2_grpc.ImageServiceStub,
    "video": video_pb2_grpc.VideoServiceStub,
}
_LIST_MODELS_REQUESTS = {
    "text": text_pb2.ListModelsRequest,
    "image": image_pb2.ListModelsRequest,
    "video": video_pb2.ListModelsRequest,
}
_CANCEL_REQUESTS = {
    "text": text_pb2.CancelJobRequest,
    "image": image_pb2.CancelJobRequest,
    "video": video_pb2.CancelJobRequest,
}


def env_name(service: str) -> str:
    return f"GENMESH_AGENT_{service.upper()}_URL"


class Upstreams:
    """One channel per configured service ("text", "image", "video" -> host:port). Thread-safe.

    With ``tls`` every channel is mutual TLS: the agent presents its certificate, and a service must
    show one from the same CA naming the host dialled (the Service name: ``text`` for ``text:50051``)."""

    def __init__(self, urls: dict[str, str], tls: TlsFiles | None = None) -> None:
        self.urls = dict(urls)
        self._channels = {name: _channel(url, tls) for name, url in urls.items()}
        self.stubs: dict[str, Any] = {name: _STUBS[name](channel) for name, channel in self._channels.items()}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def status(self, name: str) -> str:
        """ "SERVING", another health status name, or why the service did not answer."""
        service = BY_NAME[name].proto_service
        try:
            response = health_pb2_grpc.HealthStub(self._channels[name]).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            return f"no answer: {exc.code().name}"
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def require_configured(self, names: Sequence[str]) -> None:
        """Raise ``Unavailable`` naming the first of ``names`` the agent has no address for."""
        for name in names:
            if name not in self.urls:
                raise Unavailable(f"the {name} service is not configured on the agent (set {env_name(name)})")

    def require_serving(self, name: str) -> None:
        """Raise ``Unavailable`` naming ``name`` unless it is configured and answers SERVING."""
        self.require_configured([name])
        status = self.status(name)
        if status != "SERVING":
            raise Unavailable(f"the {name} service at {self.urls[name]} is not available ({status})")

    def not_serving(self) -> dict[str, str]:
        """The configured services that do not answer SERVING, with what they answered."""
        statuses = {name: self.status(name) for name in self.urls}
        return {name: status for name, status in statuses.items() if status != "SERVING"}

    def model_names(self, name: str, metadata: Sequence[tuple[str, str]]) -> dict[str, list[str]] | None:
        """What the ``name`` service can run, by kind ("base" for models, "motion_adapter", "lora"), from
        its ListModels; None when it is not configured or does not answer now."""
        if name not in self.stubs:
            return None
        try:
            response = self.stubs[name].ListModels(
                _LIST_MODELS_REQUESTS[name](), metadata=metadata, timeout=HEALTH_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            log.info("list_models_failed", service=name, code=exc.code().name)
            return None
        names: dict[str, list[str]] = {}
        for model in response.models:
            names.setdefault(model.labels.get("kind", "base"), []).append(model.name)
        return names

    def cancel_job(self, name: str, job_id: str, metadata: Sequence[tuple[str, str]]) -> None:
        """Best effort: ask the service to cancel its job (the stream is cancelled as well)."""
        try:
            self.stubs[name].CancelJob(_CANCEL_REQUESTS[name](job_id=job_id), metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            log.info("sub_job_cancel_failed", service=name, sub_job_id=job_id, code=exc.code().name)

    def stream(
        self,
        stage: str,
        method: str,
        request: Any,
        metadata: Sequence[tuple[str, str]],
        context: JobContext,
        on_event: Callable[[Any], None],
    ) -> Any:
        """Run one sub-job on the ``stage`` service and return its result message. Every event goes to
        ``on_event`` first. When the agent job is cancelled, the sub-job is cancelled and ``Cancelled``
        raised; a failed sub-job raises its own code with a message naming the stage."""
        call = getattr(self.stubs[stage], method)(request, metadata=metadata)
        sub_job_id = ""
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(CANCEL_POLL_SECONDS):
                if context.cancelled:
                    if sub_job_id:
                        self.cancel_job(stage, sub_job_id, metadata)
                    call.cancel()
                    return

        watcher = threading.Thread(target=watch, name=f"agent-cancel-{stage}", daemon=True)
        watcher.start()
        try:
            for event in _events(call):
                sub_job_id = sub_job_id or event.job_id
                on_event(event)
                kind = event.WhichOneof("event")
                if kind == "result":
                    return event.result
                if kind == "error":
                    raise from_code(event.error.code, _message(stage, sub_job_id, event.error.message))
                if kind == "cancelled":
                    context.check_cancelled()
                    raise Cancelled(_message(stage, sub_job_id, f"cancelled ({event.cancelled.reason})"))
        except grpc.RpcError as exc:
            context.check_cancelled()
            error = translate(exc)
            raise from_code(error.code, _message(stage, sub_job_id, error.message)) from None
        except GenmeshError:
            raise
        finally:
            stop.set()
            call.cancel()  # a no-op once the stream has ended
        context.check_cancelled()
        raise Unavailable(_message(stage, sub_job_id, "the stream ended without a result"))


def _channel(url: str, tls: TlsFiles | None) -> grpc.Channel:
    # Round robin over every address the target names: a headless Service's pods (``dns:///text:50051``)
    # or the local launcher's replicas (``ipv4:127.0.0.1:50061,127.0.0.1:50062``). With one, it is that one.
    options = [*CHANNEL_OPTIONS, *RECONNECT_OPTIONS, ("grpc.lb_policy_name", "round_robin")]
    if tls is None:
        return grpc.insecure_channel(url, options=options)
    return grpc.secure_channel(url, tls.channel_credentials(), options=options)


def _events(call: Any) -> Iterator[Any]:
    yield from call


def _message(stage: str, sub_job_id: str, message: str) -> str:
    job = f" (sub-job {sub_job_id})" if sub_job_id else ""
    return f"the {stage} stage failed{job}: {message}"
