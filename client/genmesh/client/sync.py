"""The blocking client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import grpc

from genmesh import errors
from genmesh.client import jobs, requests
from genmesh.client.connection import CHANNEL_OPTIONS, Connection, service_of, translate
from genmesh.client.service_rpcs import service_rpcs
from genmesh.image.v1 import image_pb2
from genmesh.library.v1 import library_pb2, library_pb2_grpc
from genmesh.models.v1 import models_pb2
from genmesh.services import SERVICES
from genmesh.text.v1 import text_pb2
from genmesh.training.v1 import training_pb2
from genmesh.video.v1 import video_pb2

TERMINAL = ("result", "error", "cancelled")


def final_result(events: Iterator[Any]) -> Any:
    """Drain a stream and return its result (errors and cancellation raise)."""
    for event in events:
        if event.WhichOneof("event") == "result":
            return event.result
    raise errors.Internal("the stream ended without a result")


class _ServiceClient:
    """Shared plumbing: the API key on every call, gRPC errors as genmesh.errors."""

    def __init__(self, stub: Any, connection: Connection) -> None:
        self._stub = stub
        self._metadata = connection.metadata()
        self._service = service_of(stub)

    def _stream(self, call: Any, request: Any, timeout: float | None) -> Iterator[Any]:
        responses = call(request, metadata=self._metadata, timeout=timeout)
        try:
            yield from responses
        except grpc.RpcError as exc:
            raise translate(exc, self._service) from None
        finally:
            responses.cancel()  # no-op once finished; cancels the job when the caller stops early

    def _unary(self, call: Any, request: Any) -> Any:
        try:
            return call(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(exc, self._service) from None


class ServiceClient(_ServiceClient):
    """A declared service's client (``genmesh.services``): its job methods and ``call`` come from the
    declaration and its proto; a subclass naming the service (``service = "text"``) adds its own calls."""

    service: ClassVar[str] = ""
    _by_service: ClassVar[dict[str, type[ServiceClient]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.service:
            ServiceClient._by_service[cls.service] = cls

    @classmethod
    def for_service(cls, name: str) -> type[ServiceClient]:
        return cls._by_service.get(name, ServiceClient)

    def __init__(self, channel: grpc.Channel, connection: Connection, service: str = "") -> None:
        self._rpcs = service_rpcs(service or self.service)
        super().__init__(self._rpcs.stub(channel), connection)

    def get_job(self, job_id: str) -> Any:
        """The job's status (and result once it has one)."""
        rpc, request = self._rpcs.call("Get", job_id)
        return self._unary(getattr(self._stub, rpc), request)

    def cancel_job(self, job_id: str) -> Any:
        rpc, request = self._rpcs.call("Cancel", job_id)
        return self._unary(getattr(self._stub, rpc), request)

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        """A job's events by id (from any client and replica): replayed so far, then live until it
        ends. Watching never cancels the job."""
        rpc, request = self._rpcs.call("Watch", job_id)
        return self._stream(getattr(self._stub, rpc), request, timeout)

    def call(self, rpc: str, request: Any = None, *, timeout: float | None = None, **fields: Any) -> Any:
        """Any RPC of the service by name, with its request (or the request's fields): a stream of
        events for a streaming RPC, else the response."""
        if rpc not in self._rpcs.requests:
            raise errors.InvalidArgument(f"rpc must be one of {', '.join(sorted(self._rpcs.requests))} (got {rpc!r})")
        request = request if request is not None else self._rpcs.requests[rpc](**fields)
        if rpc in self._rpcs.streams:
            return self._stream(getattr(self._stub, rpc), request, timeout)
        return self._unary(getattr(self._stub, rpc), request)


class TextClient(ServiceClient):
    service = "text"

    def stream_generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield GenerateResponse events: queued, started, deltas, then the result."""
        return self._stream(self._stub.Generate, requests.generate_request(prompt, **options), timeout)

    def generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> text_pb2.TextResult:
        return final_result(self.stream_generate(prompt, timeout=timeout, **options))

    def stream_chat(
        self, messages: requests.ChatMessages, *, timeout: float | None = None, **options: Any
    ) -> Iterator[Any]:
        return self._stream(self._stub.Chat, requests.chat_request(messages, **options), timeout)

    def chat(self, messages: requests.ChatMessages, *, timeout: float | None = None, **options: Any):
        return final_result(self.stream_chat(messages, timeout=timeout, **options))

    def list_models(self) -> list[Any]:
        return list(self._unary(self._stub.ListModels, text_pb2.ListModelsRequest()).models)


class ImageClient(ServiceClient):
    service = "image"

    def stream_generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield GenerateImageResponse events: queued, started, progress (with previews), result.
        Options: width, height, steps, guidance_scale, seed, scheduler ("euler_a", ...), num_images,
        init_image (bytes) or init_image_ref ((bucket, key)), strength, output_format ("png", "webp",
        "jpeg"), quality, return_inline, preview_interval_steps, negative_prompt, model, detach, loras
        ({name: weight}), mask_image (bytes) or mask_image_ref ((bucket, key)) to inpaint."""
        return self._stream(self._stub.GenerateImage, requests.image_request(prompt, **options), timeout)

    def generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> image_pb2.ImageResult:
        return final_result(self.stream_generate(prompt, timeout=timeout, **options))

    def list_models(self) -> list[Any]:
        return list(self._unary(self._stub.ListModels, image_pb2.ListModelsRequest()).models)


class VideoClient(ServiceClient):
    service = "video"

    def stream_generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield GenerateVideoResponse events: queued, started, progress (per step and decoded chunk),
        result. Options: model, motion_adapter, negative_prompt, width, height, num_frames, fps, steps,
        guidance_scale, seed, scheduler ("ddim", "euler_a", ...), output_format ("gif", "mp4", "webp"),
        return_inline, save_frames, preview_interval_steps, detach, one of init_image (bytes),
        init_image_ref ((bucket, key)), init_video (bytes) or init_video_ref, strength, prompt_schedule
        ({frame: prompt}), loras ({name: weight})."""
        return self._stream(self._stub.GenerateVideo, requests.video_request(prompt, **options), timeout)

    def generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> video_pb2.VideoResult:
        return final_result(self.stream_generate(prompt, timeout=timeout, **options))

    def list_models(self) -> list[Any]:
        return list(self._unary(self._stub.ListModels, video_pb2.ListModelsRequest()).models)


class TrainingClient(ServiceClient):
    """Training jobs ("trn-...") are TrainingJobs (``get_job``, ``cancel_job`` and ``watch`` use the
    training job RPCs); its tasks ("tsk-...": synthetic data, restore, evaluate) are plain jobs."""

    service = "training"

    def stream_synthetic_data(self, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield GenerateSyntheticDataResponse events. Options: num_images, degradation_type, seed,
        width, height, content_kinds ("documents", "textures", "shapes"), dataset_name, notify_url."""
        return self._stream(self._stub.GenerateSyntheticData, requests.synthetic_data_request(**options), timeout)

    def generate_synthetic_data(self, *, timeout: float | None = None, **options: Any) -> Any:
        return final_result(self.stream_synthetic_data(timeout=timeout, **options))

    def create_job(self, *, resume_job_id: str = "", notify_url: str = "", **spec: Any) -> training_pb2.TrainingJob:
        """Start a detached training job (returns at once). Spec: layer (required), dataset_prefix,
        num_epochs, batch_size, learning_rate, max_pairs, patch_size, validation_split, seed,
        architecture ("tiny", "small", "base"), description. ``notify_url``: a webhook POSTed when it ends."""
        request = training_pb2.CreateTrainingJobRequest(
            spec=requests.training_spec(**spec) if spec else None, resume_job_id=resume_job_id, notify_url=notify_url
        )
        return self._unary(self._stub.CreateTrainingJob, request)

    def list_jobs(self, *, state: int = 0, layer: int = 0, page_size: int = 0, page_token: str = "") -> Any:
        request = training_pb2.ListTrainingJobsRequest(
            state=state, layer=layer, page_size=page_size, page_token=page_token
        )
        return self._unary(self._stub.ListTrainingJobs, request)

    def get_report(self, job_id: str, *, return_inline: bool = False) -> training_pb2.TrainingReport:
        request = training_pb2.GetTrainingReportRequest(job_id=job_id, return_inline=return_inline)
        return self._unary(self._stub.GetTrainingReport, request)

    def list_models(self, layer: int = 0) -> list[Any]:
        return list(self._unary(self._stub.ListModels, training_pb2.ListModelsRequest(layer=layer)).models)

    def evaluate(
        self, model_id: str, *, dataset_prefix: str = "", max_pairs: int | None = None, notify_url: str = ""
    ) -> Any:
        request = training_pb2.EvaluateModelRequest(
            model_id=model_id, dataset_prefix=dataset_prefix, notify_url=notify_url
        )
        if max_pairs is not None:
            request.max_pairs = max_pairs
        return self._unary(self._stub.EvaluateModel, request)

    def stream_restore(self, model_id: str, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Options: image (bytes) or image_ref ((bucket, key)), tile_size, tile_overlap, output_format,
        quality, return_inline, notify_url."""
        return self._stream(self._stub.RestoreImage, requests.restore_request(model_id, **options), timeout)

    def restore(self, model_id: str, *, timeout: float | None = None, **options: Any) -> Any:
        return final_result(self.stream_restore(model_id, timeout=timeout, **options))


class AgentClient(ServiceClient):
    service = "agent"

    def stream_create_character(self, idea: str = "", *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield CreateCharacterResponse events: queued, started, then per stage stage_started,
        stage_progress and stage_result, then the result. Options: style, seed, steps, text, image and
        video (stage options as dicts), stages (names), sheet (a dict), portrait_ref ((bucket, key)), detach."""
        return self._stream(self._stub.CreateCharacter, requests.character_request(idea, **options), timeout)

    def create_character(self, idea: str = "", *, timeout: float | None = None, **options: Any) -> Any:
        return final_result(self.stream_create_character(idea, timeout=timeout, **options))


class LibraryClient(_ServiceClient):
    """The library of outputs, across services: ``list`` newest first, ``delete`` one job's folder."""

    def __init__(self, channel: grpc.Channel, connection: Connection) -> None:
        super().__init__(library_pb2_grpc.LibraryServiceStub(channel), connection)

    def list(self, **options: Any) -> library_pb2.ListOutputsResponse:
        """Options: kind ("text", "image", "video", "character", "restored_image"), page_size (default 20),
        page_token, all_clients (admin keys), created_after, created_before."""
        return self._unary(self._stub.ListOutputs, jobs.outputs_request(**options))

    def delete(self, job_id: str) -> library_pb2.DeleteOutputResponse:
        return self._unary(self._stub.DeleteOutput, library_pb2.DeleteOutputRequest(job_id=job_id))


class ModelsClient(ServiceClient):
    """Model files on the server (admin keys): ``pull`` one by reference, ``delete``, ``prune``."""

    service = "models"

    def stream_pull(self, ref: str, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield PullModelResponse events: queued, started, pull_progress (phase, bytes, speed, ETA),
        then the result (where it landed). ``ref``: https://...[#sha256=hex], hf:org/repo/file[@rev] (a file),
        hf:org/repo[/folder][@rev] (a diffusers folder) or civitai:<version id>. Options: no_verify,
        allow_pickle, name, detach."""
        return self._stream(self._stub.PullModel, requests.pull_request(ref, **options), timeout)

    def pull(self, ref: str, *, timeout: float | None = None, **options: Any) -> models_pb2.PullResult:
        return final_result(self.stream_pull(ref, timeout=timeout, **options))

    def delete(self, name: str, *, kind: str = "") -> models_pb2.DeleteModelResponse:
        """Delete an installed model by name; ``kind`` ("text", "image", "motion") when two share it."""
        return self._unary(self._stub.DeleteModel, requests.delete_model_request(name, kind))

    def prune(self) -> models_pb2.PruneModelsResponse:
        """Remove partial downloads no running pull is writing."""
        return self._unary(self._stub.PruneModels, models_pb2.PruneModelsRequest())


class GenmeshClient:
    """Blocking client for the genmesh gateway (or a single server). Every declared service is an
    attribute (``client.text``, ``client.images``, ...: ``ServiceInfo.attr``), also ``service(name)``."""

    text: TextClient
    images: ImageClient
    videos: VideoClient
    training: TrainingClient
    agent: AgentClient
    models: ModelsClient

    def __init__(self, url: str | None = None, api_key: str | None = None, *, secure: bool | None = None) -> None:
        self.connection = Connection.resolve(url, api_key, secure)
        if self.connection.secure:
            self._channel = grpc.secure_channel(
                self.connection.url, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS
            )
        else:
            self._channel = grpc.insecure_channel(self.connection.url, options=CHANNEL_OPTIONS)
        self._services = {
            info.name: ServiceClient.for_service(info.name)(self._channel, self.connection, info.name)
            for info in SERVICES
        }
        for info in SERVICES:
            setattr(self, info.attr, self._services[info.name])
        self.outputs = LibraryClient(self._channel, self.connection)

    def service(self, name: str) -> ServiceClient:
        """The client of the declared service ``name`` ("text", "image", ...)."""
        if name not in self._services:
            raise errors.InvalidArgument(f"service must be one of {', '.join(self._services)} (got {name!r})")
        return self._services[name]

    def list_jobs(
        self, *, services: Sequence[str] | None = None, page_size: int = 50, page_token: str = "", **filters: Any
    ) -> jobs.JobPage:
        """One page of jobs across ``services`` (default: all), newest first: the caller's own, or every
        client's with ``all_clients=True`` (admin keys). Filters: state ("running", ...), created_after,
        created_before (datetimes or Unix seconds), method (with one service). A service that is not
        running is skipped and named in ``unavailable``."""
        merge = jobs.JobMerge(services or list(jobs.LIST_REQUESTS), page_size, page_token)
        while wanted := merge.wanted():
            for service, token in wanted:
                request = jobs.list_request(service, page_size=page_size, page_token=token, **filters)
                try:
                    response = self._services[service]._stub.ListJobs(request, metadata=self.connection.metadata())
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE and not services and len(merge.sources) > 1:
                        merge.unavailable_service(service)  # not running: the others are listed
                        continue
                    raise translate(exc, service) from None
                merge.add(service, token, response.jobs, response.next_page_token)
        return merge.page()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GenmeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
