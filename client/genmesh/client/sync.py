"""The blocking client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from genmesh import errors
from genmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from genmesh.client import jobs, requests
from genmesh.client.connection import CHANNEL_OPTIONS, Connection, service_of, translate
from genmesh.image.v1 import image_pb2, image_pb2_grpc
from genmesh.library.v1 import library_pb2, library_pb2_grpc
from genmesh.models.v1 import models_pb2, models_pb2_grpc
from genmesh.text.v1 import text_pb2, text_pb2_grpc
from genmesh.training.v1 import training_pb2, training_pb2_grpc
from genmesh.video.v1 import video_pb2, video_pb2_grpc

TERMINAL = ("result", "error", "cancelled")


def _is_task(job_id: str) -> bool:
    """A Training server task ("tsk-..."), as opposed to a training job ("trn-...")."""
    return job_id.startswith("tsk-")


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


class TextClient(_ServiceClient):
    def __init__(self, channel: grpc.Channel, connection: Connection) -> None:
        super().__init__(text_pb2_grpc.TextServiceStub(channel), connection)

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

    def get_job(self, job_id: str) -> text_pb2.Job:
        return self._unary(self._stub.GetJob, text_pb2.GetJobRequest(job_id=job_id))

    def cancel_job(self, job_id: str) -> text_pb2.Job:
        return self._unary(self._stub.CancelJob, text_pb2.CancelJobRequest(job_id=job_id))

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        """A job's events by id (from any client and replica): replayed so far, then live until it
        ends. Watching never cancels the job."""
        return self._stream(self._stub.WatchJob, text_pb2.WatchJobRequest(job_id=job_id), timeout)


class ImageClient(_ServiceClient):
    def __init__(self, channel: grpc.Channel, connection: Connection) -> None:
        super().__init__(image_pb2_grpc.ImageServiceStub(channel), connection)

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

    def get_job(self, job_id: str) -> image_pb2.Job:
        return self._unary(self._stub.GetJob, image_pb2.GetJobRequest(job_id=job_id))

    def cancel_job(self, job_id: str) -> image_pb2.Job:
        return self._unary(self._stub.CancelJob, image_pb2.CancelJobRequest(job_id=job_id))

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        """A job's events by id (from any client and replica): replayed so far, then live until it
        ends. Watching never cancels the job."""
        return self._stream(self._stub.WatchJob, image_pb2.WatchJobRequest(job_id=job_id), timeout)


class VideoClient(_ServiceClient):
    def __init__(self, channel: grpc.Channel, connection: Connection) -> None:
        super().__init__(video_pb2_grpc.VideoServiceStub(channel), connection)

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

    def get_job(self, job_id: str) -> video_pb2.Job:
        return self._unary(self._stub.GetJob, video_pb2.GetJobRequest(job_id=job_id))

    def cancel_job(self, job_id: str) -> video_pb2.Job:
        return self._unary(self._stub.CancelJob, video_pb2.CancelJobRequest(job_id=job_id))

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        """A job's events by id (from any client and replica): replayed so far, then live until it
        ends. Watching never cancels the job."""
        return self._stream(self._stub.WatchJob, video_pb2.WatchJobRequest(job_id=job_id), timeout)


class TrainingClient(_ServiceClient):
    def __init__(self, channel: grpc.Channel, connection: Connection) -> None:
        super().__init__(training_pb2_grpc.TrainingServiceStub(channel), connection)

    def stream_synthetic_data(self, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield GenerateSyntheticDataResponse events. Options: num_images, degradation_type, seed,
        width, height, content_kinds ("documents", "textures", "shapes"), dataset_name."""
        return self._stream(self._stub.GenerateSyntheticData, requests.synthetic_data_request(**options), timeout)

    def generate_synthetic_data(self, *, timeout: float | None = None, **options: Any) -> Any:
        return final_result(self.stream_synthetic_data(timeout=timeout, **options))

    def create_job(self, *, resume_job_id: str = "", **spec: Any) -> training_pb2.TrainingJob:
        """Start a detached training job (returns at once). Spec: layer (required), dataset_prefix,
        num_epochs, batch_size, learning_rate, max_pairs, patch_size, validation_split, seed,
        architecture ("tiny", "small", "base"), description."""
        request = training_pb2.CreateTrainingJobRequest(
            spec=requests.training_spec(**spec) if spec else None, resume_job_id=resume_job_id
        )
        return self._unary(self._stub.CreateTrainingJob, request)

    def get_job(self, job_id: str) -> training_pb2.TrainingJob | training_pb2.Job:
        """A training job ("trn-...") as a TrainingJob; a task ("tsk-...": synthetic data, restore,
        evaluate) as the server's Job (status and result)."""
        if _is_task(job_id):
            return self._unary(self._stub.GetJob, training_pb2.GetJobRequest(job_id=job_id))
        return self._unary(self._stub.GetTrainingJob, training_pb2.GetTrainingJobRequest(job_id=job_id))

    def list_jobs(self, *, state: int = 0, layer: int = 0, page_size: int = 0, page_token: str = "") -> Any:
        request = training_pb2.ListTrainingJobsRequest(
            state=state, layer=layer, page_size=page_size, page_token=page_token
        )
        return self._unary(self._stub.ListTrainingJobs, request)

    def cancel_job(self, job_id: str) -> training_pb2.TrainingJob | training_pb2.Job:
        if _is_task(job_id):
            return self._unary(self._stub.CancelJob, training_pb2.CancelJobRequest(job_id=job_id))
        return self._unary(self._stub.CancelTrainingJob, training_pb2.CancelTrainingJobRequest(job_id=job_id))

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        """Everything the job did so far (replayed), then live events until it ends (a training job's
        WatchTrainingJob events, or a task's WatchJob events)."""
        if _is_task(job_id):
            return self._stream(self._stub.WatchJob, training_pb2.WatchJobRequest(job_id=job_id), timeout)
        return self._stream(self._stub.WatchTrainingJob, training_pb2.WatchTrainingJobRequest(job_id=job_id), timeout)

    def get_report(self, job_id: str, *, return_inline: bool = False) -> training_pb2.TrainingReport:
        request = training_pb2.GetTrainingReportRequest(job_id=job_id, return_inline=return_inline)
        return self._unary(self._stub.GetTrainingReport, request)

    def list_models(self, layer: int = 0) -> list[Any]:
        return list(self._unary(self._stub.ListModels, training_pb2.ListModelsRequest(layer=layer)).models)

    def evaluate(self, model_id: str, *, dataset_prefix: str = "", max_pairs: int | None = None) -> Any:
        request = training_pb2.EvaluateModelRequest(model_id=model_id, dataset_prefix=dataset_prefix)
        if max_pairs is not None:
            request.max_pairs = max_pairs
        return self._unary(self._stub.EvaluateModel, request)

    def stream_restore(self, model_id: str, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Options: image (bytes) or image_ref ((bucket, key)), tile_size, tile_overlap, output_format,
        quality, return_inline."""
        return self._stream(self._stub.RestoreImage, requests.restore_request(model_id, **options), timeout)

    def restore(self, model_id: str, *, timeout: float | None = None, **options: Any) -> Any:
        return final_result(self.stream_restore(model_id, timeout=timeout, **options))


class AgentClient(_ServiceClient):
    def __init__(self, channel: grpc.Channel, connection: Connection) -> None:
        super().__init__(agent_pb2_grpc.AgentServiceStub(channel), connection)

    def stream_create_character(self, idea: str = "", *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield CreateCharacterResponse events: queued, started, then per stage stage_started,
        stage_progress and stage_result, then the result. Options: style, seed, steps, text, image and
        video (stage options as dicts), stages (names), sheet (a dict), portrait_ref ((bucket, key)), detach."""
        return self._stream(self._stub.CreateCharacter, requests.character_request(idea, **options), timeout)

    def create_character(self, idea: str = "", *, timeout: float | None = None, **options: Any) -> Any:
        return final_result(self.stream_create_character(idea, timeout=timeout, **options))

    def get_job(self, job_id: str) -> agent_pb2.Job:
        return self._unary(self._stub.GetJob, agent_pb2.GetJobRequest(job_id=job_id))

    def cancel_job(self, job_id: str) -> agent_pb2.Job:
        return self._unary(self._stub.CancelJob, agent_pb2.CancelJobRequest(job_id=job_id))

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        """A job's events by id (from any client and replica): replayed so far, then live until it
        ends. Watching never cancels the job."""
        return self._stream(self._stub.WatchJob, agent_pb2.WatchJobRequest(job_id=job_id), timeout)


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


class ModelsClient(_ServiceClient):
    """Model files on the server (admin keys): ``pull`` one by reference, ``delete``, ``prune``."""

    def __init__(self, channel: grpc.Channel, connection: Connection) -> None:
        super().__init__(models_pb2_grpc.ModelsServiceStub(channel), connection)

    def stream_pull(self, ref: str, *, timeout: float | None = None, **options: Any) -> Iterator[Any]:
        """Yield PullModelResponse events: queued, started, pull_progress (phase, bytes, speed, ETA),
        then the result (where it landed). ``ref``: https://...[#sha256=hex], hf:org/repo/file[@rev] or
        civitai:<version id>. Options: no_verify, allow_pickle, name, detach."""
        return self._stream(self._stub.PullModel, requests.pull_request(ref, **options), timeout)

    def pull(self, ref: str, *, timeout: float | None = None, **options: Any) -> models_pb2.PullResult:
        return final_result(self.stream_pull(ref, timeout=timeout, **options))

    def delete(self, name: str, *, kind: str = "") -> models_pb2.DeleteModelResponse:
        """Delete an installed model by name; ``kind`` ("text", "image", "motion") when two share it."""
        return self._unary(self._stub.DeleteModel, requests.delete_model_request(name, kind))

    def prune(self) -> models_pb2.PruneModelsResponse:
        """Remove partial downloads no running pull is writing."""
        return self._unary(self._stub.PruneModels, models_pb2.PruneModelsRequest())

    def get_job(self, job_id: str) -> models_pb2.Job:
        return self._unary(self._stub.GetJob, models_pb2.GetJobRequest(job_id=job_id))

    def cancel_job(self, job_id: str) -> models_pb2.Job:
        return self._unary(self._stub.CancelJob, models_pb2.CancelJobRequest(job_id=job_id))

    def watch(self, job_id: str, *, timeout: float | None = None) -> Iterator[Any]:
        return self._stream(self._stub.WatchJob, models_pb2.WatchJobRequest(job_id=job_id), timeout)


class GenmeshClient:
    """Blocking client for the genmesh gateway (or a single server)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, secure: bool | None = None) -> None:
        self.connection = Connection.resolve(url, api_key, secure)
        if self.connection.secure:
            self._channel = grpc.secure_channel(
                self.connection.url, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS
            )
        else:
            self._channel = grpc.insecure_channel(self.connection.url, options=CHANNEL_OPTIONS)
        self.text = TextClient(self._channel, self.connection)
        self.images = ImageClient(self._channel, self.connection)
        self.videos = VideoClient(self._channel, self.connection)
        self.training = TrainingClient(self._channel, self.connection)
        self.agent = AgentClient(self._channel, self.connection)
        self.outputs = LibraryClient(self._channel, self.connection)
        self.models = ModelsClient(self._channel, self.connection)
        self._list_calls = {service: stub(self._channel).ListJobs for service, stub in jobs.LIST_STUBS.items()}

    def list_jobs(
        self, *, services: Sequence[str] | None = None, page_size: int = 50, page_token: str = "", **filters: Any
    ) -> jobs.JobPage:
        """One page of jobs across ``services`` (default: all), newest first: the caller's own, or every
        client's with ``all_clients=True`` (admin keys). Filters: state ("running", ...), created_after,
        created_before (datetimes or Unix seconds), method (with one service). A service that is not
        running is skipped and named in ``unavailable``."""
        merge = jobs.JobMerge(services or list(jobs.LIST_STUBS), page_size, page_token)
        while wanted := merge.wanted():
            for service, token in wanted:
                request = jobs.list_request(service, page_size=page_size, page_token=token, **filters)
                try:
                    response = self._list_calls[service](request, metadata=self.connection.metadata())
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
