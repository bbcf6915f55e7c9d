"""The asyncio client (same surface as the blocking one, with ``async``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
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
from genmesh.video.v1 import video_pb2


async def final_result(events: AsyncIterator[Any]) -> Any:
    async for event in events:
        if event.WhichOneof("event") == "result":
            return event.result
    raise errors.Internal("the stream ended without a result")


class _AsyncServiceClient:
    def __init__(self, stub: Any, connection: Connection) -> None:
        self._stub = stub
        self._metadata = connection.metadata()
        self._service = service_of(stub)

    async def _stream(self, call: Any, request: Any, timeout: float | None) -> AsyncIterator[Any]:
        responses = call(request, metadata=self._metadata, timeout=timeout)
        try:
            async for event in responses:
                yield event
        except grpc.RpcError as exc:
            raise translate(exc, self._service) from None
        finally:
            responses.cancel()

    async def _unary(self, call: Any, request: Any) -> Any:
        try:
            return await call(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate(exc, self._service) from None


class AsyncServiceClient(_AsyncServiceClient):
    """As ``sync.ServiceClient``: a declared service's job methods and ``call``, from the declaration."""

    service: ClassVar[str] = ""
    _by_service: ClassVar[dict[str, type[AsyncServiceClient]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.service:
            AsyncServiceClient._by_service[cls.service] = cls

    @classmethod
    def for_service(cls, name: str) -> type[AsyncServiceClient]:
        return cls._by_service.get(name, AsyncServiceClient)

    def __init__(self, channel: grpc.aio.Channel, connection: Connection, service: str = "") -> None:
        self._rpcs = service_rpcs(service or self.service)
        super().__init__(self._rpcs.stub(channel), connection)

    async def get_job(self, job_id: str) -> Any:
        rpc, request = self._rpcs.call("Get", job_id)
        return await self._unary(getattr(self._stub, rpc), request)

    async def cancel_job(self, job_id: str) -> Any:
        rpc, request = self._rpcs.call("Cancel", job_id)
        return await self._unary(getattr(self._stub, rpc), request)

    def watch(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[Any]:
        """A job's events by id: replayed so far, then live until it ends (never cancels it)."""
        rpc, request = self._rpcs.call("Watch", job_id)
        return self._stream(getattr(self._stub, rpc), request, timeout)

    def call(self, rpc: str, request: Any = None, *, timeout: float | None = None, **fields: Any) -> Any:
        """Any RPC of the service by name: an async iterator of events for a streaming RPC, else an
        awaitable of the response."""
        if rpc not in self._rpcs.requests:
            raise errors.InvalidArgument(f"rpc must be one of {', '.join(sorted(self._rpcs.requests))} (got {rpc!r})")
        request = request if request is not None else self._rpcs.requests[rpc](**fields)
        if rpc in self._rpcs.streams:
            return self._stream(getattr(self._stub, rpc), request, timeout)
        return self._unary(getattr(self._stub, rpc), request)


class AsyncTextClient(AsyncServiceClient):
    service = "text"

    def stream_generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> AsyncIterator[Any]:
        return self._stream(self._stub.Generate, requests.generate_request(prompt, **options), timeout)

    async def generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> text_pb2.TextResult:
        return await final_result(self.stream_generate(prompt, timeout=timeout, **options))

    def stream_chat(
        self, messages: requests.ChatMessages, *, timeout: float | None = None, **options: Any
    ) -> AsyncIterator[Any]:
        return self._stream(self._stub.Chat, requests.chat_request(messages, **options), timeout)

    async def chat(self, messages: requests.ChatMessages, *, timeout: float | None = None, **options: Any):
        return await final_result(self.stream_chat(messages, timeout=timeout, **options))

    async def list_models(self) -> list[Any]:
        return list((await self._unary(self._stub.ListModels, text_pb2.ListModelsRequest())).models)


class AsyncImageClient(AsyncServiceClient):
    service = "image"

    def stream_generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> AsyncIterator[Any]:
        return self._stream(self._stub.GenerateImage, requests.image_request(prompt, **options), timeout)

    async def generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> image_pb2.ImageResult:
        return await final_result(self.stream_generate(prompt, timeout=timeout, **options))

    async def list_models(self) -> list[Any]:
        return list((await self._unary(self._stub.ListModels, image_pb2.ListModelsRequest())).models)


class AsyncVideoClient(AsyncServiceClient):
    service = "video"

    def stream_generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> AsyncIterator[Any]:
        return self._stream(self._stub.GenerateVideo, requests.video_request(prompt, **options), timeout)

    async def generate(self, prompt: str, *, timeout: float | None = None, **options: Any) -> video_pb2.VideoResult:
        return await final_result(self.stream_generate(prompt, timeout=timeout, **options))

    async def list_models(self) -> list[Any]:
        return list((await self._unary(self._stub.ListModels, video_pb2.ListModelsRequest())).models)


class AsyncAgentClient(AsyncServiceClient):
    service = "agent"

    def stream_create_character(
        self, idea: str = "", *, timeout: float | None = None, **options: Any
    ) -> AsyncIterator[Any]:
        return self._stream(self._stub.CreateCharacter, requests.character_request(idea, **options), timeout)

    async def create_character(self, idea: str = "", *, timeout: float | None = None, **options: Any) -> Any:
        return await final_result(self.stream_create_character(idea, timeout=timeout, **options))


class AsyncLibraryClient(_AsyncServiceClient):
    """The library of outputs, across services: ``list`` newest first, ``delete`` one job's folder."""

    def __init__(self, channel: grpc.aio.Channel, connection: Connection) -> None:
        super().__init__(library_pb2_grpc.LibraryServiceStub(channel), connection)

    async def list(self, **options: Any) -> library_pb2.ListOutputsResponse:
        """Options: kind ("text", "image", "video", "character", "restored_image"), page_size (default 20),
        page_token, all_clients (admin keys), created_after, created_before."""
        return await self._unary(self._stub.ListOutputs, jobs.outputs_request(**options))

    async def delete(self, job_id: str) -> library_pb2.DeleteOutputResponse:
        return await self._unary(self._stub.DeleteOutput, library_pb2.DeleteOutputRequest(job_id=job_id))


class AsyncModelsClient(AsyncServiceClient):
    """As ``sync.ModelsClient``."""

    service = "models"

    def stream_pull(self, ref: str, *, timeout: float | None = None, **options: Any) -> AsyncIterator[Any]:
        return self._stream(self._stub.PullModel, requests.pull_request(ref, **options), timeout)

    async def pull(self, ref: str, *, timeout: float | None = None, **options: Any) -> models_pb2.PullResult:
        return await final_result(self.stream_pull(ref, timeout=timeout, **options))

    async def delete(self, name: str, *, kind: str = "") -> models_pb2.DeleteModelResponse:
        return await self._unary(self._stub.DeleteModel, requests.delete_model_request(name, kind))

    async def prune(self) -> models_pb2.PruneModelsResponse:
        return await self._unary(self._stub.PruneModels, models_pb2.PruneModelsRequest())


class AsyncGenmeshClient:
    """asyncio client for the genmesh gateway (or a single server): as ``GenmeshClient``."""

    text: AsyncTextClient
    images: AsyncImageClient
    videos: AsyncVideoClient
    training: AsyncServiceClient
    agent: AsyncAgentClient
    models: AsyncModelsClient

    def __init__(self, url: str | None = None, api_key: str | None = None, *, secure: bool | None = None) -> None:
        self.connection = Connection.resolve(url, api_key, secure)
        if self.connection.secure:
            self._channel = grpc.aio.secure_channel(
                self.connection.url, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS
            )
        else:
            self._channel = grpc.aio.insecure_channel(self.connection.url, options=CHANNEL_OPTIONS)
        self._services = {
            info.name: AsyncServiceClient.for_service(info.name)(self._channel, self.connection, info.name)
            for info in SERVICES
        }
        for info in SERVICES:
            setattr(self, info.attr, self._services[info.name])
        self.outputs = AsyncLibraryClient(self._channel, self.connection)

    def service(self, name: str) -> AsyncServiceClient:
        """The client of the declared service ``name`` ("text", "image", ...)."""
        if name not in self._services:
            raise errors.InvalidArgument(f"service must be one of {', '.join(self._services)} (got {name!r})")
        return self._services[name]

    async def list_jobs(
        self, *, services: Sequence[str] | None = None, page_size: int = 50, page_token: str = "", **filters: Any
    ) -> jobs.JobPage:
        """As ``GenmeshClient.list_jobs``; the services are asked at once."""
        merge = jobs.JobMerge(services or list(jobs.LIST_REQUESTS), page_size, page_token)

        async def fetch(service: str, token: str) -> None:
            request = jobs.list_request(service, page_size=page_size, page_token=token, **filters)
            try:
                response = await self._services[service]._stub.ListJobs(request, metadata=self.connection.metadata())
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and not services and len(merge.sources) > 1:
                    merge.unavailable_service(service)  # not running: the others are listed
                    return
                raise translate(exc, service) from None
            merge.add(service, token, response.jobs, response.next_page_token)

        while wanted := merge.wanted():
            await asyncio.gather(*(fetch(service, token) for service, token in wanted))
        return merge.page()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncGenmeshClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
