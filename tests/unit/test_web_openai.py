"""The web front door's translation between OpenAI's shapes and genmesh's protos, without processes:
lenient about unknown fields, strict about types, ranges left to the services (one source), and
OpenAI's stream framing."""

from __future__ import annotations

import base64
import struct

import pytest
from google.protobuf import json_format

from genmesh.common.v1 import job_pb2, media_pb2
from genmesh.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from genmesh.image.v1 import image_pb2
from genmesh.text.v1 import text_pb2
from genmesh.video.v1 import video_pb2
from servers.web import embeddings, images, jobs, text, videos
from servers.web.errors import OpenAIError, from_genmesh
from servers.web.fields import Body, Form, ignored_header, parse_size

HI = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(**fields) -> text.TextCall:
    body = {"model": "m", "messages": HI, **fields}
    return text.chat_call(Body(body, text.CHAT_FIELDS), {})


def refused(make, *args, **kwargs) -> OpenAIError:
    with pytest.raises(OpenAIError) as raised:
        make(*args, **kwargs)
    assert raised.value.status == 400
    return raised.value


# -- reading bodies -----------------------------------------------------------------------------


def test_unknown_fields_are_listed_and_known_ones_typed() -> None:
    body = Body({"model": "m", "user": "u", "store": True, "temperature": None, "max_tokens": 3.0}, text.CHAT_FIELDS)
    assert body.ignored == ["store", "user"]
    assert body.get("temperature", "number", 0.5) == 0.5  # null reads as absent
    assert body.get("max_tokens", "integer") == 3  # 3.0 is the integer 3 in JSON
    for value, kind in ((True, "number"), ("1", "integer"), (1.5, "integer"), ([], "object")):
        error = refused(Body({"x": value}, ["x"]).get, "x", kind)
        assert error.param == "x" and f"expected {kind}" in error.message
    assert refused(Body, [1, 2], ()).message == "the request body must be a JSON object (got array)"


def test_ignored_field_names_always_make_a_valid_header() -> None:
    """Any JSON name (non-ASCII, control characters, commas, lone surrogates) stays one printable
    ASCII item; plain names stay as they are."""
    names = ["metadata", "\u00fcber", "a,b", "tab\t", "\ud81e", "x-y_z.1"]
    value = ignored_header(names)
    assert value == "metadata,%C3%BCber,a%2Cb,tab%09,%ED%A0%9E,x-y_z.1"
    assert value.isascii() and value.isprintable() and len(value.split(",")) == len(names)


def test_form_fields_convert_like_json() -> None:
    form = Form({"n": "2", "strength": "0.5", "prompt": "p", "junk": "x"}, images.EDIT_FIELDS)
    assert form.ignored == ["junk"]
    assert (form.get("n", "integer"), form.get("strength", "number"), form.get("prompt", "string")) == (2, 0.5, "p")
    assert refused(Form({"n": "two"}, ["n"]).get, "n", "integer").param == "n"


@pytest.mark.parametrize(("size", "expected"), [("512x768", (512, 768)), ("auto", (None, None)), (None, (None, None))])
def test_sizes(size, expected) -> None:
    assert parse_size(size) == expected


def test_a_malformed_size_is_refused() -> None:
    assert refused(parse_size, "512*512").param == "size"


# -- errors -------------------------------------------------------------------------------------


def test_the_services_messages_name_the_callers_parameter() -> None:
    error = from_genmesh(
        InvalidArgument("sampling.max_tokens must be between 1 and 32768 (got -5)", field="sampling.max_tokens"),
        chat(max_completion_tokens=-5).params,
    )
    assert (error.status, error.param, error.code) == (400, "max_completion_tokens", "invalid_value")
    assert error.message == "max_completion_tokens must be between 1 and 32768 (got -5)"
    role = from_genmesh(InvalidArgument("messages[2].role must be one of ...", field="messages[2].role"), {})
    assert role.param == "messages[2].role"
    size = from_genmesh(InvalidArgument("height must be a multiple of 8 (got 68)", field="height"), images.PARAMS)
    assert size.param == "size" and size.message == "size (height) must be a multiple of 8 (got 68)"
    model = from_genmesh(NotFound("model: unknown model 'x'", field="model"))
    assert (model.status, model.code, model.param) == (404, "model_not_found", "model")
    full = from_genmesh(ResourceExhausted("queue full"))
    assert (full.status, full.code, full.headers()) == (429, "rate_limit_exceeded", {"retry-after": "1"})
    down = from_genmesh(Unavailable("the text service is not available"))
    assert (down.status, down.type, down.code) == (503, "server_error", "service_unavailable")
    assert down.body() == {"error": {"message": "the text service is not available", "type": "server_error",
                                     "param": None, "code": "service_unavailable"}}  # fmt: skip


# -- text requests ------------------------------------------------------------------------------


def test_chat_request_maps_to_genmesh() -> None:
    call = chat(
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        max_tokens=9, temperature=0, top_p=0.5, seed=7, stop="END", stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    request = call.request
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief."), ("user", "a\nb")]
    sampling = request.sampling
    assert (sampling.max_tokens, sampling.temperature, sampling.top_p, sampling.seed) == (9, 0, 0.5, 7)
    assert sampling.HasField("temperature") and list(sampling.stop) == ["END"]
    assert not sampling.HasField("top_k")  # unset: the service's default
    assert call.stream and call.include_usage and call.method == "Chat"
    assert not chat(stream_options={"include_usage": True}).include_usage  # only for streams


def test_aliases_name_real_models() -> None:
    call = text.chat_call(Body({"model": "gpt-4o-mini", "messages": HI}, text.CHAT_FIELDS), {"gpt-4o-mini": "gemma"})
    assert call.request.model == "gemma" and call.model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("response_format", "schema"),
    [
        ({"type": "json_object"}, None),
        ({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": True}}, "object"),
        ({"type": "json_object", "schema": {"type": "array"}}, "array"),  # llama.cpp's server's shape
        ({"type": "json_schema", "schema": {"type": "string"}}, "string"),
    ],
)
def test_response_formats(response_format, schema) -> None:
    fmt = chat(response_format=response_format).request.response_format
    assert fmt.type == text_pb2.ResponseFormat.TYPE_JSON
    assert (fmt.json_schema["type"] if fmt.HasField("json_schema") else None) == schema


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 3}, "n"),
        ({"stop": 5}, "stop"),
        ({"stop": ["a", 1]}, "stop[1]"),
        ({"seed": 2**70}, "seed"),  # beyond what the proto holds: refused here, naming it
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0].type"),
        ({"messages": [{"content": "no role"}]}, "messages[0].role"),
        ({"messages": "Hi"}, "messages"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": "nope"}}},
         "response_format.json_schema.schema"),
    ],
)  # fmt: skip
def test_bad_chat_requests_name_the_parameter(fields, param) -> None:
    assert refused(chat, **fields).param == param


def test_completion_prompts() -> None:
    call = text.completion_call(Body({"prompt": ["Once"]}, text.COMPLETION_FIELDS), {})
    assert call.request.prompt == "Once" and call.method == "Generate"
    assert refused(text.completion_call, Body({"prompt": ["a", "b"]}, ()), {}).param == "prompt"


# -- stream framing -----------------------------------------------------------------------------


def test_chunks_follow_openais_framing() -> None:
    call = chat(stream=True, stream_options={"include_usage": True})
    first, piece = call.delta("job", None, first=True), call.delta("job", "Hello")
    usage = text_pb2.Usage(prompt_tokens=3, completion_tokens=1, total_tokens=4)
    result = text_pb2.TextResult(text="Hello", finish_reason=text_pb2.FINISH_REASON_LENGTH, model="m", usage=usage)
    last, usage = call.final("job", result)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert piece["choices"][0]["delta"] == {"content": "Hello"}
    assert [c["choices"][0]["finish_reason"] for c in (first, piece, last)] == [None, None, "length"]
    assert last["choices"][0]["delta"] == {}
    assert [c["usage"] for c in (first, piece, last)] == [None] * 3  # null until the usage chunk
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    assert {c["id"] for c in (first, piece, last, usage)} == {"chatcmpl-job"}
    plain = chat(stream=True)
    assert "usage" not in plain.delta("job", "x") and len(plain.final("job", result)) == 1
    completion = text.completion_call(Body({"prompt": "p", "stream": True}, text.COMPLETION_FIELDS), {})
    chunk = completion.delta("job", "x")
    assert chunk["object"] == "text_completion" and chunk["choices"][0]["text"] == "x" and chunk["id"] == "cmpl-job"


# -- images and videos --------------------------------------------------------------------------


def test_image_generation_request() -> None:
    body = Body({"prompt": "p", "n": 2, "size": "64x128", "response_format": "b64_json", "seed": 3, "steps": 4,
                 "guidance_scale": 1.5, "negative_prompt": "n", "output_format": "webp", "quality": "hd"},
                images.GENERATION_FIELDS)  # fmt: skip
    call = images.generation_call(body)
    request = call.request
    assert (request.num_images, request.width, request.height, request.seed, request.steps) == (2, 64, 128, 3, 4)
    assert request.return_inline and call.b64 and request.output_format == media_pb2.IMAGE_FORMAT_WEBP
    assert body.ignored == ["quality"]  # OpenAI's quality words have no genmesh meaning: ignored, and said so
    assert (
        refused(images.generation_call, Body({"prompt": "p", "response_format": "png"}, ())).param == "response_format"
    )


def test_image_edits_take_one_image_and_no_mask() -> None:
    form = Form({"prompt": "p", "strength": "0.4"}, images.EDIT_FIELDS)
    call = images.edit_call(form, b"png", 1, False)
    assert call.request.init_image_data == b"png" and call.request.strength == pytest.approx(0.4)
    assert refused(images.edit_call, form, None, 2, False).param == "image"
    assert refused(images.edit_call, form, b"png", 1, True).param == "mask"


def test_video_seconds_become_frames_at_the_rate() -> None:
    call = videos.create_call(Body({"prompt": "p", "seconds": "4", "size": "64x64"}, videos.CREATE_FIELDS), None)
    assert (call.request.num_frames, call.request.fps, call.request.detach) == (32, 8, True)
    assert call.request.output_format == video_pb2.VIDEO_FORMAT_MP4  # OpenAI's content is MP4
    call = videos.create_call(
        Form({"prompt": "p", "seconds": "2", "fps": "12"}, videos.CREATE_FIELDS), (b"i", "image/png")
    )
    assert (call.request.num_frames, call.request.init_image_data) == (24, b"i")
    assert refused(videos.create_call, Body({"seconds": "soon"}, ()), None).param == "seconds"


@pytest.mark.parametrize("seconds", [1.7976931348623155e308, "inf", "nan", "-2", 0, 1e300])
def test_video_seconds_that_make_no_frame_count_are_400_naming_seconds(seconds) -> None:
    """Found by schemathesis: 1.8e308 seconds x 7 fps overflowed to inf and round() raised (a 500)."""
    fields = Body({"prompt": "p", "seconds": seconds, "fps": 7}, videos.CREATE_FIELDS)
    assert refused(videos.create_call, fields, None).param == "seconds"


@pytest.mark.parametrize(
    ("state", "status", "error"),
    [
        (job_pb2.JOB_STATE_QUEUED, "queued", None),
        (job_pb2.JOB_STATE_RUNNING, "in_progress", None),
        (job_pb2.JOB_STATE_SUCCEEDED, "completed", None),
        (job_pb2.JOB_STATE_FAILED, "failed", "internal"),
        (job_pb2.JOB_STATE_CANCELLED, "failed", "cancelled"),
    ],
)
def test_video_objects_from_jobs(state, status, error) -> None:
    job = video_pb2.Job()
    job.status.job_id, job.status.state = "vid-1", state
    job.status.progress.fraction = 0.5
    if state == job_pb2.JOB_STATE_FAILED:
        job.status.error.code = "INTERNAL"
    obj = videos.video_object(job)
    assert (obj["id"], obj["object"], obj["status"]) == ("vid-1", "video", status)
    assert obj["progress"] == (100 if status == "completed" else 50)
    assert (obj["error"] or {}).get("code") == error


def test_embedding_requests_and_answers() -> None:
    body = Body({"input": ["a", "b"], "model": "m", "encoding_format": "base64", "dimensions": 2, "user": "u"},
                embeddings.FIELDS)  # fmt: skip
    call = embeddings.embed_call(body, {})
    assert (list(call.request.inputs), call.request.dimensions, call.base64, body.ignored) == (
        ["a", "b"],
        2,
        True,
        ["user"],
    )
    result = text_pb2.EmbedResult(model="m", usage=text_pb2.Usage(prompt_tokens=4, total_tokens=4))
    result.embeddings.add(index=0, values=[0.6, 0.8])
    answer = call.response(result)
    assert answer["data"][0]["embedding"] == base64.b64encode(struct.pack("<2f", 0.6, 0.8)).decode()
    assert answer["usage"] == {"prompt_tokens": 4, "total_tokens": 4} and answer["object"] == "list"
    bad = [
        ({"input": [[1, 2]]}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": ["a", 3]}, "input[1]"),
    ]
    for fields, param in bad:
        assert refused(embeddings.embed_call, Body(fields, embeddings.FIELDS), {}).param == param


def test_partial_images_are_spread_over_the_steps() -> None:
    call = images.generation_call(Body({"prompt": "p", "stream": True, "partial_images": 2}, images.GENERATION_FIELDS))
    assert call.request.preview_interval_steps == 1 and call.request.return_inline
    sent = []
    for step in range(1, 7):
        event = image_pb2.GenerateImageResponse()
        event.progress.step, event.progress.total_steps = step, 6
        event.progress.preview.data, event.progress.preview.content_type = b"webp", "image/webp"
        if (partial := call.partial(event)) is not None:
            sent.append((step, partial["partial_image_index"], partial["output_format"]))
    assert sent == [(2, 0, "webp"), (4, 1, "webp")]  # at 1/3 and 2/3 of the steps
    assert refused(images.generation_call, Body({"prompt": "p", "partial_images": 4}, ())).param == "partial_images"


# -- tool calls ---------------------------------------------------------------------------------


def test_tools_constrain_the_answer_and_come_back_as_tool_calls() -> None:
    earlier = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [earlier]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    call = chat(messages=history, tools=[WEATHER], tool_choice="required", stream=True)
    turns = [(m.role, m.content) for m in call.request.messages]
    assert turns[0][0] == "system" and "get_weather" in turns[0][1]
    assert turns[2] == (
        "assistant",
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_1"}]}',
    )
    assert turns[3] == ("user", "Result of call_1: sunny")
    schema = json_format.MessageToDict(call.request.response_format.json_schema)
    assert schema["required"] == ["tool_calls"]  # required: no plain-text branch
    assert schema["properties"]["tool_calls"]["items"]["anyOf"][0]["properties"]["name"] == {"const": "get_weather"}
    assert call.params["response_format.json_schema"] == "tools"
    result = text_pb2.TextResult(text='{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Bergen"}}]}')
    whole = call.completion("job", result)["choices"][0]
    assert whole["finish_reason"] == "tool_calls" and whole["message"]["content"] is None
    function = {"name": "get_weather", "arguments": '{"city": "Bergen"}'}
    assert whole["message"]["tool_calls"] == [{"id": "call_job_0", "type": "function", "function": function}]
    *calls, last = call.final("job", result)
    assert calls[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    auto = chat(tools=[WEATHER])  # tool_choice auto: a tool call or text
    assert "anyOf" in json_format.MessageToDict(auto.request.response_format.json_schema)
    reply = auto.completion("job", text_pb2.TextResult(text='{"content": "Hello"}'))["choices"][0]
    assert reply["message"]["content"] == "Hello" and "tool_calls" not in reply["message"]
    assert chat(tools=[WEATHER], tool_choice="none").tools is None
    single = chat(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    assert (
        json_format.MessageToDict(single.request.response_format.json_schema)["properties"]["tool_calls"]["maxItems"]
        == 1
    )


def test_stored_files_are_fetched_from_the_media_address_with_the_signed_host() -> None:
    """In a container the presigned URL names the gateway as browsers see it; the front door connects
    to the object store instead, and the Host header the signature covers stays the URL's."""
    import httpx

    from servers.web.app import media_request

    client = httpx.AsyncClient()
    url = "http://localhost:8080/outputs/vid-0/video.mp4?X-Amz-Signature=abc"
    direct = media_request(client, url, "")
    assert str(direct.url) == url
    via_store = media_request(client, url, "minio:9000")
    assert (via_store.url.host, via_store.url.port) == ("minio", 9000)
    assert via_store.url.raw_path == b"/outputs/vid-0/video.mp4?X-Amz-Signature=abc"
    assert via_store.headers["host"] == "localhost:8080"


def test_get_jobs_lists_model_pulls_too() -> None:
    """Pulls are jobs like any other: GET /v1/jobs lists them beside the rest, as ``genmesh jobs`` does."""
    assert jobs.services(["image,models"], ["image", "models", "text"]) == ["image", "models"]
    assert jobs.services([], ["image", "models", "text"]) == ["text", "image", "models"]
