"""The front door's HTTP app (Starlette): OpenAI's routes, each a genmesh job on a service.

Envoy checks the key and the caller's rate limit before a request gets here and forwards the
client's name in ``x-client-id``; this process passes it (and ``x-request-id``) on to the services,
answers OpenAI's shapes, and holds no state: every call is a job in a service, named in the
``x-genmesh-job-id`` header, and a caller that goes away cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from genmesh.common.v1 import job_pb2
from genmesh.errors import GenmeshError
from genmesh.video.v1 import video_pb2
from servers.mesh.openapi import sse_event
from servers.runtime import caller
from servers.web import console, embeddings, images, jobs, status, text, videos
from servers.web.contract import STATUS, Operation
from servers.web.errors import ERROR_SCHEMA, OpenAIError, from_genmesh, invalid, model_not_found
from servers.web.fields import IGNORED_HEADER, Body, Form, Param, ignored_header
from servers.web.models import MODEL, MODEL_LIST, default_model, list_models
from servers.web.settings import UPSTREAMS as UPSTREAM_NAMES
from servers.web.settings import WebSettings
from servers.web.upstreams import JobStream, Upstreams, unary

log = structlog.get_logger(__name__)

JOB_HEADER = "x-genmesh-job-id"


class ClientGone(Exception):
    """The caller disconnected before the answer; its job was cancelled."""


def metadata(request: Request) -> tuple[tuple[str, str], ...]:
    return tuple((name, request.headers[name]) for name in caller.PASSED_ON if name in request.headers)


def upstreams(request: Request) -> Upstreams:
    return request.app.state.upstreams


async def read_body(request: Request, used: tuple[str, ...]) -> Body:
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise invalid(None, f"the request body is not valid JSON: {exc}") from None
    body = Body(data, used)
    request.state.ignored = body.ignored
    return body


@dataclass
class ReadForm:
    fields: Form  # the text fields
    items: list[tuple[str, Any]]  # every part, files included
    keys: set[str]


async def read_form(request: Request, used: tuple[str, ...]) -> ReadForm:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid(None, "send this request as multipart/form-data")
    try:
        form = await request.form()
    except Exception as exc:  # a malformed body or a part over the parser's limits
        raise invalid(None, f"the multipart body could not be read: {exc}") from None
    items = list(form.multi_items())
    fields = Form({key: value for key, value in items if isinstance(value, str)}, used)
    request.state.ignored = fields.ignored
    return ReadForm(fields, items, {key for key, _ in items})


def headers(request: Request, job_id: str = "") -> dict[str, str]:
    out = {JOB_HEADER: job_id} if job_id else {}
    if getattr(request.state, "ignored", None):
        out[IGNORED_HEADER] = ignored_header(request.state.ignored)
    return out


async def open_job(request: Request, service: str, method: str, message: Any, params: dict[str, str]) -> JobStream:
    try:
        return await JobStream.open(upstreams(request), service, method, message, metadata(request))
    except GenmeshError as exc:
        raise from_genmesh(exc, params) from None


async def until_disconnected(request: Request, work: Awaitable[Any], on_gone: Callable[[], None]) -> Any:
    """``await work``, unless the caller disconnects first: then ``on_gone()`` and ``ClientGone``."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            on_gone()
    if not task.done() or task.cancelled():
        raise ClientGone
    return task.result()


def sse(data: Any, event: str = "") -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


# -- models -------------------------------------------------------------------------------------


async def models_list(request: Request) -> Response:
    models, down = await list_models(upstreams(request), metadata(request), request.app.state.aliases)
    out = headers(request)
    if down:
        out["x-genmesh-unavailable-services"] = ",".join(sorted(down))
    return JSONResponse({"object": "list", "data": models}, headers=out)


async def models_get(request: Request) -> Response:
    wanted = request.path_params["model"]
    models, _ = await list_models(upstreams(request), metadata(request), request.app.state.aliases)
    for model in models:
        if model["id"] == wanted:
            return JSONResponse(model)
    raise model_not_found(wanted)


# -- text ---------------------------------------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    call = text.chat_call(await read_body(request, text.CHAT_FIELDS), request.app.state.aliases)
    return await _text(request, call)


async def completions(request: Request) -> Response:
    call = text.completion_call(await read_body(request, text.COMPLETION_FIELDS), request.app.state.aliases)
    return await _text(request, call)


async def _text(request: Request, call: text.TextCall) -> Response:
    if not call.model:  # chunks name the model before the result does
        call.model = await default_model(upstreams(request), "text", metadata(request))
    stream = await open_job(request, "text", call.method, call.request, call.params)
    out = headers(request, stream.job_id)
    if call.stream:
        return StreamingResponse(_text_chunks(call, stream), media_type="text/event-stream", headers=out)
    try:
        result = await until_disconnected(request, stream.result(), stream.cancel)
    except GenmeshError as exc:
        raise from_genmesh(exc, call.params) from None
    return JSONResponse(call.completion(stream.job_id, result), headers=out)


async def _text_chunks(call: text.TextCall, stream: JobStream) -> AsyncIterator[bytes]:
    """OpenAI's framing: the role chunk, content chunks (``finish_reason: null``), the chunk with the
    finish reason, the usage chunk (``choices: []``) when asked, ``[DONE]``. An error after the
    headers went out is one ``data: {"error": ...}`` event, and the stream ends."""
    job_id = stream.job_id
    try:
        yield sse(call.delta(job_id, None, first=True))
        async for event in stream.events():
            kind = event.WhichOneof("event")
            if kind == "delta" and event.delta.text and not call.tools:  # with tools, the whole answer at the end
                yield sse(call.delta(job_id, event.delta.text, tokens=event.delta.logprobs))
            elif kind == "result":
                for chunk in call.final(job_id, event.result):
                    yield sse(chunk)
                yield DONE
    except GenmeshError as exc:
        yield sse(from_genmesh(exc, call.params).body())
    finally:
        stream.cancel()  # the caller went away (or the job ended): a running job is cancelled


# -- embeddings ---------------------------------------------------------------------------------


async def create_embeddings(request: Request) -> Response:
    call = embeddings.embed_call(await read_body(request, embeddings.FIELDS), request.app.state.aliases)
    stream = await open_job(request, "text", "Embed", call.request, call.params)
    try:
        result = await until_disconnected(request, stream.result(), stream.cancel)
    except GenmeshError as exc:
        raise from_genmesh(exc, call.params) from None
    return JSONResponse(call.response(result), headers=headers(request, stream.job_id))


# -- images -------------------------------------------------------------------------------------


async def images_generations(request: Request) -> Response:
    return await _image(request, images.generation_call(await read_body(request, images.GENERATION_FIELDS)))


async def images_edits(request: Request) -> Response:
    form = await read_form(request, images.EDIT_FIELDS)
    files = [value for key, value in form.items if key in ("image", "image[]") and isinstance(value, UploadFile)]
    data = await files[0].read() if len(files) == 1 else None
    return await _image(request, images.edit_call(form.fields, data, len(files), "mask" in form.keys))


async def _image(request: Request, call: images.ImageCall) -> Response:
    stream = await open_job(request, "image", "GenerateImage", call.request, call.params)
    if call.stream:
        events = _image_events(call, stream)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers(request, stream.job_id))
    try:
        result = await until_disconnected(request, stream.result(), stream.cancel)
    except GenmeshError as exc:
        raise from_genmesh(exc, call.params) from None
    return JSONResponse(call.response(result), headers=headers(request, stream.job_id))


async def _image_events(call: images.ImageCall, stream: JobStream) -> AsyncIterator[bytes]:
    """OpenAI's image stream: ``image_generation.partial_image`` events from genmesh's previews, then
    ``image_generation.completed``; an error after the headers is one ``data: {"error": ...}``."""
    try:
        async for event in stream.events():
            kind = event.WhichOneof("event")
            if kind == "progress_update" and (partial := call.partial(event)) is not None:
                yield sse(partial, event=partial["type"])
            elif kind == "result":
                for completed in call.completed(event.result):
                    yield sse(completed, event=completed["type"])
    except GenmeshError as exc:
        yield sse(from_genmesh(exc, call.params).body())
    finally:
        stream.cancel()


# -- videos -------------------------------------------------------------------------------------


async def videos_create(request: Request) -> Response:
    reference = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await read_form(request, videos.CREATE_FIELDS)
        fields: Body | Form = form.fields
        upload = next((value for key, value in form.items if key == "input_reference"), None)
        if isinstance(upload, UploadFile):
            reference = (await upload.read(), upload.content_type or "")
    else:
        fields = await read_body(request, videos.CREATE_FIELDS)
        if fields.has("input_reference"):
            raise invalid("input_reference", "input_reference: upload the image as a file (multipart/form-data)")
    call = videos.create_call(fields, reference)
    if not call.request.model:
        call.request.model = await default_model(upstreams(request), "video", metadata(request))
    stream = await open_job(request, "video", "GenerateVideo", call.request, call.params)
    stream.cancel()  # the job is detached: it runs on, and its id is the video's
    return JSONResponse(videos.queued_object(stream.job_id, call), headers=headers(request, stream.job_id))


async def _video_job(request: Request, method: str) -> video_pb2.Job:
    video_id = request.path_params["video_id"]
    requests = {"GetJob": video_pb2.GetJobRequest, "CancelJob": video_pb2.CancelJobRequest}
    try:
        stub = upstreams(request).stub("video")
        return await unary("video", getattr(stub, method), requests[method](job_id=video_id), metadata(request))
    except GenmeshError as exc:
        raise from_genmesh(exc, {"job_id": "video_id"}) from None


async def videos_get(request: Request) -> Response:
    job = await _video_job(request, "GetJob")
    return JSONResponse(videos.video_object(job), headers=headers(request, job.status.job_id))


async def videos_delete(request: Request) -> Response:
    """Cancels a queued or running video; a finished one stays stored (``deleted: false``)."""
    job = await _video_job(request, "CancelJob")
    deleted = job.status.state == job_pb2.JOB_STATE_CANCELLED
    body = {"id": job.status.job_id, "object": "video.deleted", "deleted": deleted}
    return JSONResponse(body, headers=headers(request, job.status.job_id))


async def videos_content(request: Request) -> Response:
    """The video (``variant=video``, default) or its first frame (``thumbnail``), streamed from storage."""
    variant = request.query_params.get("variant", "video")
    if variant not in videos.VARIANTS:
        raise invalid("variant", f"variant: {' or '.join(videos.VARIANTS)} (got {variant!r})")
    job = await _video_job(request, "GetJob")
    if job.status.state != job_pb2.JOB_STATE_SUCCEEDED:
        state = videos.STATUSES.get(job.status.state, "queued")
        raise OpenAIError(409, f"video {job.status.job_id} is not completed (status {state})",
                          type="invalid_request_error", code="video_not_ready")  # fmt: skip
    artifact = job.result.video if variant == "video" else job.result.poster
    return await proxy_object(request, artifact.url, artifact.content_type, headers(request, job.status.job_id))


def media_request(client: httpx.AsyncClient, url: str, media_url: str) -> httpx.Request:
    """GET of a presigned URL, sent to ``media_url`` when set: the URL names the address callers use
    (the gateway's), which need not resolve inside this container. The signature covers the Host
    header, so it stays the URL's own."""
    if not media_url:
        return client.build_request("GET", url)
    signed = httpx.URL(url)
    host, _, port = media_url.rpartition(":")
    return client.build_request(
        "GET", signed.copy_with(host=host, port=int(port)), headers={"host": signed.netloc.decode()}
    )


async def proxy_object(request: Request, url: str, content_type: str, out: dict[str, str]) -> Response:
    """Stream a stored object (by its presigned URL) to the caller: one URL for every client, whether
    or not it can reach the object store itself."""
    client: httpx.AsyncClient = request.app.state.http
    upstream = await client.send(media_request(client, url, request.app.state.media_url), stream=True)
    if upstream.status_code != 200:
        await upstream.aclose()
        raise OpenAIError(503, f"object storage answered {upstream.status_code} for the stored file; retry shortly",
                          type="server_error", code="storage_unavailable")  # fmt: skip

    async def body() -> AsyncIterator[bytes]:
        try:
            async for piece in upstream.aiter_raw():
                yield piece
        finally:
            await upstream.aclose()

    if "content-length" in upstream.headers:
        out = {**out, "content-length": upstream.headers["content-length"]}
    return StreamingResponse(body(), media_type=content_type or "application/octet-stream", headers=out)


# -- health -------------------------------------------------------------------------------------


async def livez(request: Request) -> Response:
    """The process answers (the gateway's health check): calls that need a service that is down still
    get here and are answered 503 naming it."""
    return Response("ok\n", media_type="text/plain")


async def health(request: Request) -> Response:
    """200 while every service the front door calls answers SERVING, else 503; per service either way."""
    statuses = await upstreams(request).refresh()
    serving = all(status == "SERVING" for status in statuses.values())
    return JSONResponse({"status": "SERVING" if serving else "NOT_SERVING", "services": statuses},
                        status_code=200 if serving else 503)  # fmt: skip


async def service_status(request: Request) -> Response:
    """Each service's health, queue depth and memory (``servers/web/status.py``), for any key."""
    services = upstreams(request)
    checks = {name: services.status(name) for name in services.urls}
    return JSONResponse(await status.status_body(request.app.state.http, checks, request.app.state.metrics_targets))


# -- errors -------------------------------------------------------------------------------------


async def _openai_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpenAIError)
    return JSONResponse(exc.body(), status_code=exc.status, headers={**headers(request), **exc.headers()})


async def _genmesh_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GenmeshError)
    return await _openai_error(request, from_genmesh(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 (a path or method this door does not serve), in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    error = OpenAIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                        type="invalid_request_error", code=code)  # fmt: skip
    return await _openai_error(request, error)


async def videos_list(request: Request) -> Response:
    """The caller's videos, newest first (Video's ListJobs of GenerateVideo); ``after`` is the last id
    of the previous page, as OpenAI's cursor pages send it."""
    query = request.query_params
    limit_text = query.get("limit", str(videos.LIST_DEFAULT))
    limit = int(limit_text) if limit_text.isdigit() else 0
    if not 1 <= limit <= videos.LIST_MAX:
        raise invalid("limit", f"limit must be between 1 and {videos.LIST_MAX} (got {limit_text!r})")
    if query.get("order", "desc") != "desc":
        raise invalid("order", f"order: only 'desc' (newest first) is supported (got {query.get('order')!r})")
    listing = video_pb2.ListJobsRequest(method="GenerateVideo")
    stub = upstreams(request).stub("video")
    try:
        if after := query.get("after"):
            previous = await unary("video", stub.GetJob, video_pb2.GetJobRequest(job_id=after), metadata(request))
            listing.created_before.CopyFrom(previous.status.create_time)
        found: list[video_pb2.Job] = []
        while True:  # a page may be short while more remain: read on until one more than asked for
            listing.page_size = limit + 1 - len(found)
            page = await unary("video", stub.ListJobs, listing, metadata(request))
            found.extend(page.jobs)
            if len(found) > limit or not page.next_page_token:
                break
            listing.page_token = page.next_page_token
    except GenmeshError as exc:
        raise from_genmesh(exc, {"job_id": "after"}) from None
    data = [videos.video_object(job) for job in found[:limit]]
    body = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(found) > limit,
    }
    return JSONResponse(body, headers=headers(request))


async def jobs_list(request: Request) -> Response:
    """The caller's jobs across every service (``servers/web/jobs.py``), in genmesh's REST shape."""
    try:
        query = jobs.JobsQuery(request.query_params, request.query_params.getlist("service"),
                               list(upstreams(request).urls))  # fmt: skip
        merge = query.merge()
        while wanted := merge.wanted():
            answers = await asyncio.gather(
                *(_list_one(request, query, service, token) for service, token in wanted), return_exceptions=True
            )
            for (service, token), answer in zip(wanted, answers, strict=True):
                if isinstance(answer, GenmeshError) and query.skips(answer, merge):
                    merge.unavailable_service(service)  # not running: the others are listed
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    merge.add(service, token, answer.jobs, answer.next_page_token)
    except GenmeshError as exc:
        status, body = jobs.status_body(exc)
        return JSONResponse(body, status_code=status)
    return JSONResponse(jobs.page_body(merge.page()))


async def _list_one(request: Request, query: jobs.JobsQuery, service: str, token: str) -> Any:
    stub = upstreams(request).stub(service)
    return await unary(service, stub.ListJobs, query.request(service, token), metadata(request))


OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")


async def openapi_document(request: Request) -> Response:
    """genmesh's REST contract (generated from the protos by ``protos/generate.py``)."""
    return FileResponse(OPENAPI_DOCUMENT, media_type="application/json", headers={"cache-control": "no-cache"})


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nobody reads it: the caller is gone


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected_error", path=request.url.path)
    return await _openai_error(request, OpenAIError(500, "internal error (see the web server's log)",
                                                    type="server_error", code="internal_error"))  # fmt: skip


ROUTES = [
    Route("/v1/jobs", jobs_list, methods=["GET"]),
    Route("/v1/status", service_status, methods=["GET"]),
    Route("/v1/models", models_list, methods=["GET"]),
    Route("/v1/models/{model:path}", models_get, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", create_embeddings, methods=["POST"]),
    Route("/v1/images/generations", images_generations, methods=["POST"]),
    Route("/v1/images/edits", images_edits, methods=["POST"]),
    Route("/v1/videos", videos_create, methods=["POST"]),
    Route("/v1/videos", videos_list, methods=["GET"]),
    Route("/v1/videos/{video_id}", videos_get, methods=["GET"]),
    Route("/v1/videos/{video_id}", videos_delete, methods=["DELETE"]),
    Route("/v1/videos/{video_id}/content", videos_content, methods=["GET"]),
    Route("/openapi.json", openapi_document, methods=["GET", "HEAD"]),
    Route("/livez", livez, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    *console.routes(),  # the web console's files under /ui/
]


def _or_error(event: dict) -> dict:
    """A stream's event data: ``event``, or the error that ended the stream after its headers went out."""
    return {"anyOf": [event, ERROR_SCHEMA]}


_VIDEO_ID = Param("video_id", "string", "A video's id (a genmesh video job id).", schema={"pattern": "^vid-[^/?#]+$"})
# What each route reads and answers: the OpenAPI document's source for these routes (servers/web/contract.py).
OPERATIONS = {
    jobs_list: Operation("List the caller's jobs across every service, newest first", jobs_list.__doc__ or "",
                         tag="jobs", query=jobs.PARAMETERS, answer=jobs.PAGE, errors=STATUS, statuses=(400, 403, 503)),
    service_status: Operation("Each service's health, queue depth and memory (sums; any key)",
                              service_status.__doc__ or "", tag="jobs", answer=status.ANSWER, statuses=()),
    models_list: Operation("List every model of every service", answer=MODEL_LIST, statuses=(503,)),
    models_get: Operation("One model", path=(Param("model", "string", "A model's name or alias."),),
                          answer=MODEL, statuses=(404, 503)),
    chat_completions: Operation("Chat (a Text service Chat job)", body=text.CHAT_FIELDS, answer=text.CHAT_ANSWER,
                                event=sse_event(_or_error(text.CHAT_CHUNK), done=True)),
    completions: Operation("Continue a prompt (a Text service Generate job)", body=text.COMPLETION_FIELDS,
                           answer=text.COMPLETION_ANSWER, event=sse_event(_or_error(text.COMPLETION_CHUNK), done=True)),
    create_embeddings: Operation("Embed texts (a Text service Embed job)", body=embeddings.FIELDS,
                                 answer=embeddings.ANSWER),
    images_generations: Operation("Draw images (an Image service GenerateImage job)", body=images.GENERATION_FIELDS,
                                  answer=images.ANSWER, event=sse_event(_or_error(images.EVENT))),
    images_edits: Operation("Redraw an image (img2img, multipart)", form=images.EDIT_FIELDS, answer=images.ANSWER),
    videos_create: Operation("Start a video (a detached GenerateVideo job); JSON, or multipart with a file",
                             videos_create.__doc__ or "", body=videos.CREATE_FIELDS, form=videos.CREATE_FIELDS,
                             answer=videos.VIDEO_OBJECT),
    videos_list: Operation("List the caller's videos, newest first", query=videos.LIST_PARAMS,
                           answer=videos.VIDEO_LIST),
    videos_get: Operation("One video", path=(_VIDEO_ID,), answer=videos.VIDEO_OBJECT, shaped_id=True),
    videos_delete: Operation("Cancel a video", videos_delete.__doc__ or "", path=(_VIDEO_ID,),
                             answer=videos.VIDEO_DELETED, shaped_id=True),
    videos_content: Operation("A finished video's file or thumbnail", videos_content.__doc__ or "", path=(_VIDEO_ID,),
                              query=videos.CONTENT_PARAMS, binary=True, statuses=(400, 404, 409, 429, 503),
                              shaped_id=True),
}  # fmt: skip


def create_app(settings: WebSettings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # grpc.aio channels bind to this loop
        app.state.upstreams = Upstreams(settings.upstream_urls(), watched=UPSTREAM_NAMES)
        app.state.aliases = settings.aliases()
        app.state.media_url = settings.media_url.strip()
        app.state.metrics_targets = settings.metrics_targets()
        # Stored objects are fetched by their presigned URLs, on loopback or the cluster network only.
        app.state.http = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30.0, read=None))
        try:
            yield
        finally:
            await app.state.http.aclose()
            await app.state.upstreams.close()

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            OpenAIError: _openai_error,
            GenmeshError: _genmesh_error,
            ClientGone: _client_gone,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
