"""The OpenAI-compatible routes at the real gateway, driven by the real ``openai`` package (sync and
async, streaming and not) as a new user would: ``OpenAI(base_url=<gateway>/v1, api_key=KEY)``.
Everything runs on the session mesh (`genmesh up`'s launcher, which starts the web front door)."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from PIL import Image

from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2
from servers.mesh.api_keys import QuotaOverride
from servers.mesh.envoy import Envoy, render_envoy_config
from servers.mesh.launcher import DESCRIPTOR_PATH, Mesh
from servers.mesh.processes import ManagedProcess, free_port, wait_until
from tests.integration.helpers import png_bytes

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).parent / "golden" / "openai_chat_stream.txt"
MODEL = "gemma-3-270m-q4_k_m"
HI = [{"role": "user", "content": "Say hi."}]
SMALL_IMAGE = {"steps": 2}  # genmesh extras, merged into the body as Open WebUI does


@pytest.fixture(scope="module")
def oai(gateway_url: str, api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=api_key, max_retries=0) as client:
        yield client


@pytest.fixture
async def aoai(gateway_url: str, api_key: str):
    async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key=api_key, max_retries=0) as client:
        yield client


def wait_for_state(client: GenmeshClient, service: str, job_id: str, state: int) -> None:
    jobs = getattr(client, service)
    wait_until(lambda: jobs.get_job(job_id).status.state == state, timeout=60, what=f"{job_id} to reach {state}")


# -- models -------------------------------------------------------------------------------------


def test_models_lists_every_model_of_every_service(oai: openai.OpenAI, client: GenmeshClient) -> None:
    models = {model.id: model for model in oai.models.list().data}
    for service, listed in (("text", client.text), ("image", client.images), ("video", client.videos)):
        for info in listed.list_models():
            assert info.name in models
            assert service in models[info.name].services
    assert {model.owned_by for model in models.values()} == {"genmesh"}
    assert {model.object for model in models.values()} == {"model"}
    assert models[MODEL].service == "text" and models[MODEL].smoke_test is False
    # The state as ListModels says it (another test's model may have taken the text default's place).
    assert all((model.state == "loaded") == model.loaded for model in models.values())
    assert {model.state for model in models.values()} <= {"loaded", "loads_on_first_use", "not_downloaded"}
    # The built-in diffusion model draws noise: flagged as a smoke test; Image and Video both run it.
    assert models["tiny-sd15"].smoke_test is True and models["tiny-sd15"].services == ["image", "video"]
    assert models["tiny-motion-adapter"].kind == "motion_adapter"
    assert oai.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as raised:
        oai.models.retrieve("no-such-model")
    assert raised.value.code == "model_not_found"
    assert raised.value.response.json() == {
        "error": {
            "message": "The model 'no-such-model' does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


# -- chat and completions -----------------------------------------------------------------------


def test_chat_is_a_genmesh_job_and_unknown_fields_are_listed(oai: openai.OpenAI, client: GenmeshClient) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=HI, max_tokens=8, temperature=0, seed=7, user="alice", store=False, metadata={"a": "b"}
    )
    completion = raw.parse()
    job_id = raw.headers["x-genmesh-job-id"]
    assert completion.id == f"chatcmpl-{job_id}" and completion.object == "chat.completion"
    assert raw.headers["x-genmesh-ignored-fields"] == "metadata,store,user"
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.completion_tokens <= 8 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    job = client.text.get_job(job_id)  # the call is a job like any other, with its result
    assert job.status.state == job_pb2.JOB_STATE_SUCCEEDED and job.result.text == choice.message.content
    assert job.status.method.endswith("TextService/Chat")


async def test_streamed_chat_matches_the_whole_answer(oai: openai.OpenAI, aoai: openai.AsyncOpenAI) -> None:
    # max_completion_tokens (the newer name) and content as parts; greedy, so both runs agree.
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ]
    options = {"model": MODEL, "messages": messages, "max_completion_tokens": 12, "temperature": 0, "seed": 3}
    whole = oai.chat.completions.create(**options)
    stream = await aoai.chat.completions.create(**options, stream=True, stream_options={"include_usage": True})
    pieces, reasons, usage = [], [], None
    async for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            reasons.append(chunk.choices[0].finish_reason)
        else:
            usage = chunk.usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert reasons[:-1] == [None] * (len(reasons) - 1) and reasons[-1] == whole.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def _shape(event: str, job_id: str) -> str:
    """An SSE event with what varies between runs replaced by placeholders."""
    assert event.startswith("data: "), event
    payload = event[len("data: ") :]
    if payload == "[DONE]":
        return event
    chunk = json.loads(payload)
    assert payload == json.dumps(chunk, separators=(",", ":")), "compact JSON, as OpenAI sends"
    assert chunk["id"] == f"chatcmpl-{job_id}"
    chunk["id"], chunk["created"] = "<id>", "<created>"
    for choice in chunk["choices"]:
        if choice["delta"].get("content"):
            choice["delta"]["content"] = "<text>"
    if chunk.get("usage"):
        chunk["usage"] = {name: "<count>" for name in chunk["usage"]}
    return "data: " + json.dumps(chunk, separators=(",", ":"))


def test_streamed_chat_transcript_has_openais_framing(gateway_url: str, api_key: str) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 6, "temperature": 0, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        job_id = response.headers["x-genmesh-job-id"]
        transcript = response.read().decode()
    assert transcript.endswith("data: [DONE]\n\n")
    events = transcript.split("\n\n")
    assert events[-1] == ""  # every event ends with a blank line, the last one too
    shapes = [_shape(event, job_id) for event in events[:-1]]
    collapsed = [shape for index, shape in enumerate(shapes) if index == 0 or shape != shapes[index - 1]]
    assert "\n".join(collapsed) + "\n" == GOLDEN.read_text()


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def test_tool_calls(oai: openai.OpenAI, aoai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
    options = {"model": MODEL, "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False,
               "max_tokens": 128, "seed": 3}  # fmt: skip
    completion = oai.chat.completions.create(messages=messages, **options)
    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_weather"  # one: parallel_tool_calls is off
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_txt-")
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # Streamed: the call arrives as a tool-call delta with its index; then the result goes back in.
    deltas, reasons = [], []
    async for chunk in await aoai.chat.completions.create(messages=messages, stream=True, **options):
        deltas += chunk.choices[0].delta.tool_calls or []
        reasons.append(chunk.choices[0].finish_reason)
    assert [delta.index for delta in deltas] == list(range(len(calls)))  # the same (seeded) calls
    assert [delta.function.arguments for delta in deltas] == [call.function.arguments for call in calls]
    assert reasons[-1] == "tool_calls" and set(reasons[:-1]) == {None}
    follow_up = [*messages, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 C"}]  # fmt: skip
    answer = oai.chat.completions.create(model=MODEL, messages=follow_up, tools=[WEATHER], max_tokens=64, seed=3)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_json_schema_output_validates(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    completion = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A person as JSON."}], max_tokens=64, seed=5,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )  # fmt: skip
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)
    # json_object: any JSON value; llama.cpp's server's shape with the schema inline is accepted too.
    completion = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "JSON please."}], max_tokens=64, seed=5,
        response_format={"type": "json_object", "schema": schema},  # type: ignore[typeddict-unknown-key]
    )  # fmt: skip
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


async def test_completions_sync_and_streamed(oai: openai.OpenAI, aoai: openai.AsyncOpenAI) -> None:
    options = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": 10,
        "temperature": 0,
        "seed": 2,
        "stop": ["\n\n"],
    }
    whole = oai.completions.create(**options)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-txt-")
    text = ""
    async for chunk in await aoai.completions.create(**options, stream=True):
        assert chunk.object == "text_completion"
        text += chunk.choices[0].text
    assert text == whole.choices[0].text and text


async def test_log_probabilities_whole_and_streamed(oai: openai.OpenAI, aoai: openai.AsyncOpenAI) -> None:
    options = {"model": MODEL, "messages": HI, "max_tokens": 6, "temperature": 0, "seed": 1}
    whole = oai.chat.completions.create(**options, logprobs=True, top_logprobs=2)
    tokens = whole.choices[0].logprobs.content
    assert "".join(token.token for token in tokens) == whole.choices[0].message.content
    assert len(tokens) == whole.usage.completion_tokens
    for token in tokens:
        assert token.logprob <= 0 and bytes(token.bytes).decode() == token.token and len(token.top_logprobs) == 2
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
    streamed = []
    async for chunk in await aoai.chat.completions.create(**options, logprobs=True, top_logprobs=2, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed.extend(chunk.choices[0].logprobs.content)
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in tokens]
    assert oai.chat.completions.create(**options).choices[0].logprobs is None  # only when asked

    prompt = "Once upon a time"
    completion = oai.completions.create(model=MODEL, prompt=prompt, max_tokens=5, temperature=0, seed=1, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert logprobs.text_offset[0] == len(prompt)
    pairs = zip(logprobs.tokens, logprobs.top_logprobs, strict=True)
    assert all(token in alternatives for token, alternatives in pairs)
    assert all(len(alternatives) in (2, 3) for alternatives in logprobs.top_logprobs)  # top 2 + the sampled one


@pytest.mark.parametrize(
    ("options", "param", "message"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "top_logprobs must be between 0 and 20 (got 21)"),
        ({"top_logprobs": 2}, "top_logprobs", "top_logprobs: only with logprobs: true"),
    ],
)
def test_bad_logprobs_are_400_naming_the_parameter(oai: openai.OpenAI, options: dict, param: str, message: str):
    with pytest.raises(openai.BadRequestError) as raised:
        oai.chat.completions.create(model=MODEL, messages=HI, **options)
    error = raised.value.response.json()["error"]
    assert error["param"] == param and message in error["message"]
    with pytest.raises(openai.BadRequestError) as raised:
        oai.completions.create(model=MODEL, prompt="x", logprobs=6)
    assert raised.value.response.json()["error"]["param"] == "logprobs"


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "param", "message"),
    [
        ({"max_tokens": -5}, "max_tokens", "max_tokens must be between 1 and 32768 (got -5)"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "max_completion_tokens must be between 1 and 32768"),
        ({"temperature": 2.5}, "temperature", "temperature must be between 0 and 2 (got 2.5)"),
        ({"top_p": 0}, "top_p", "top_p: must be in (0, 1]"),
        ({"seed": -1}, "seed", "seed must be between 0 and 4294967295"),
        ({"extra_body": {"temperature": "hot"}}, "temperature", "temperature: expected number, got string"),
        ({"n": 2}, "n", "only one choice per request"),
        ({"stop": ["x"] * 9}, "stop", "at most 8 stop sequences"),
        ({"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role", "must be one of system, user"),
        ({"response_format": {"type": "xml"}}, "response_format.type", "text, json_object or json_schema"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(oai: openai.OpenAI, options: dict, param: str, message: str):
    request = {"model": MODEL, "messages": HI, **options}
    with pytest.raises(openai.BadRequestError) as raised:
        oai.chat.completions.create(**request)
    error = raised.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and message in error["message"] and error["type"] == "invalid_request_error"


def test_unknown_model_is_404_model_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        oai.chat.completions.create(model="no-such-model", messages=HI)
    assert raised.value.code == "model_not_found" and raised.value.param == "model"


async def test_a_wrong_or_missing_key_is_401_in_openais_shape(gateway_url: str, api_key: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="not-a-key", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as raised:
            await wrong.models.list()
    assert raised.value.code == "invalid_api_key"
    assert set(raised.value.response.json()["error"]) == {"message", "type", "param", "code"}
    missing = httpx.post(f"{gateway_url}/v1/chat/completions", json={"model": MODEL, "messages": HI})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    # x-api-key works as on genmesh's own routes.
    assert httpx.get(f"{gateway_url}/v1/models", headers={"x-api-key": api_key}).status_code == 200


def test_unknown_fields_with_any_name_are_listed_in_a_valid_header(gateway_url: str, api_key: str) -> None:
    """Found by schemathesis: a field name outside printable ASCII (JSON allows any, lone surrogates
    included) made the ignored-fields header invalid, and every answer to it a bare 500."""
    names = '"\\u00fcber": 1, "a,b": 2, "tab\\u0009": 3, "\\ud81e": 4'
    for path, field, empty in (("/v1/embeddings", "input", "[]"), ("/v1/images/generations", "prompt", '""')):
        body = f'{{"{field}": {empty}, {names}}}'
        response = httpx.post(f"{gateway_url}{path}", content=body, timeout=30,
                              headers={"x-api-key": api_key, "content-type": "application/json"})  # fmt: skip
        assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text
        assert response.headers["x-genmesh-ignored-fields"] == "a%2Cb,tab%09,%C3%BCber,%ED%A0%9E"
    form = {"prompt": "p", "t\u00fcr": "1"}
    edit = httpx.post(f"{gateway_url}/v1/images/edits", data=form, headers={"x-api-key": api_key}, timeout=30,
                      files={"mask": ("m.png", png_bytes(8, 8), "image/png")})  # fmt: skip
    assert edit.status_code == 400 and edit.json()["error"]["param"] == "mask"
    assert edit.headers["x-genmesh-ignored-fields"] == "t%C3%BCr"


def test_genmesh_routes_stay_strict(gateway_url: str, api_key: str) -> None:
    """The strict JSON check still refuses unknown fields on genmesh's own REST routes."""
    response = httpx.post(
        f"{gateway_url}/v1/text:chat", headers={"x-api-key": api_key},
        json={"messages": HI, "sampling": {"max_tokens": 4}, "user": "alice"},
    )  # fmt: skip
    assert response.status_code == 400 and "user" in response.json()["message"]


@pytest.fixture
def gateway(tmp_path: Path):
    """A gateway of its own (for a small quota, or a dead front door), started per test."""
    started: list[Envoy] = []

    def start(web_port: int, quota: QuotaOverride | None = None) -> str:
        port, admin_port = free_port(), free_port()
        config = tmp_path / f"envoy-{port}.yaml"
        config.write_text(
            render_envoy_config(
                listen_port=port, admin_port=admin_port, descriptor_path=DESCRIPTOR_PATH, api_keys={"k": "the-key"},
                quotas={"k": quota} if quota else {}, upstreams={}, rate_limit_rps=100, rate_limit_burst=100,
                web=[("127.0.0.1", web_port)],
            )
        )  # fmt: skip
        started.append(Envoy(config, admin_port=admin_port, log_path=tmp_path / f"envoy-{port}.log").start())
        return f"http://127.0.0.1:{port}"

    yield start
    for envoy in started:
        envoy.stop()


def test_a_flooding_key_gets_429_with_retry_after(mesh: Mesh, gateway) -> None:
    url = gateway(mesh.web_port, QuotaOverride(rps=1, burst=3))
    with openai.OpenAI(base_url=f"{url}/v1", api_key="the-key", max_retries=0) as flooding:
        wait_until(lambda: flooding.models.list() is not None, timeout=30, what="the gateway's web route")
        with pytest.raises(openai.RateLimitError) as raised:
            for _ in range(50):  # the bucket holds 3 and refills 1/s
                flooding.models.list()
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["retry-after"] == "1"


def test_the_front_door_down_is_503_in_openais_shape(gateway) -> None:
    url = gateway(free_port())  # nothing listens there
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key="the-key", max_retries=0) as oai,
        pytest.raises(openai.InternalServerError) as raised,
    ):
        oai.models.list()
    assert raised.value.status_code == 503 and raised.value.code == "service_unavailable"


def test_a_service_down_is_503_naming_it(tmp_path: Path) -> None:
    """A front door whose Text server is gone answers 503 naming it, and its /health says so."""
    port = free_port()
    web = ManagedProcess(
        "web-test", [sys.executable, "-m", "servers.web", f"--port={port}", f"--text-url=127.0.0.1:{free_port()}"],
        log_path=tmp_path / "web.log",
    ).start()  # fmt: skip
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/livez").status_code == 200, timeout=30,
                   what="the web front door", process=web)  # fmt: skip
        with (
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0) as oai,
            pytest.raises(openai.InternalServerError) as raised,
        ):
            oai.chat.completions.create(model=MODEL, messages=HI)
        assert raised.value.status_code == 503 and "the text service is not available" in raised.value.message
        assert raised.value.response.headers["retry-after"] == "1"
        health = httpx.get(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 503 and health.json()["services"]["text"].startswith("no answer")
    finally:
        web.stop()


def test_a_client_that_disconnects_cancels_its_job(gateway_url: str, api_key: str, client: GenmeshClient) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 2000, "stream": True}
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
        job_id = response.headers["x-genmesh-job-id"]
        next(response.iter_lines())  # the role chunk: the job is there
    wait_for_state(client, "text", job_id, job_pb2.JOB_STATE_CANCELLED)


# -- embeddings ---------------------------------------------------------------------------------


async def test_embeddings(oai: openai.OpenAI, aoai: openai.AsyncOpenAI, client: GenmeshClient) -> None:
    texts = ["The cat sat on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply today."]
    raw = oai.embeddings.with_raw_response.create(model=MODEL, input=texts)  # base64, as openai-python asks
    embedded = raw.parse()
    vectors = [item.embedding for item in embedded.data]
    assert [item.index for item in embedded.data] == [0, 1, 2] and {len(v) for v in vectors} == {640}
    assert all(abs(sum(x * x for x in vector) - 1) < 1e-4 for vector in vectors)  # unit length
    cosine = [[sum(a * b for a, b in zip(u, v, strict=True)) for v in vectors] for u in vectors]
    assert cosine[0][1] > cosine[0][2] + 0.1  # the paraphrase is nearer than the unrelated sentence
    assert embedded.usage.prompt_tokens == embedded.usage.total_tokens > len(texts)
    job = client.text.get_job(raw.headers["x-genmesh-job-id"])
    assert job.status.state == job_pb2.JOB_STATE_SUCCEEDED and len(job.embed_result.embeddings) == 3
    short = await aoai.embeddings.create(model=MODEL, input=texts[0], encoding_format="float", dimensions=64)
    assert len(short.data[0].embedding) == 64 and abs(sum(x * x for x in short.data[0].embedding) - 1) < 1e-4
    with pytest.raises(openai.BadRequestError) as raised:
        oai.embeddings.create(model=MODEL, input=[])
    assert raised.value.param == "input" and "1..256" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        oai.embeddings.create(model=MODEL, input="x", dimensions=100000)
    assert raised.value.param == "dimensions" and "between 0 and 640" in raised.value.message


def test_a_client_that_stops_waiting_cancels_its_job(mesh: Mesh, gateway_url: str, api_key: str) -> None:
    """Without a stream there is no job id to look up before the answer: the Text server's metrics
    count the cancelled Chat job instead."""

    def cancelled() -> float:
        metrics = httpx.get(f"http://127.0.0.1:{mesh.metrics_ports['text']}/metrics").text
        line = re.search(r'genmesh_jobs_total\{method="Chat",service="text",state="cancelled"\} ([0-9.]+)', metrics)
        return float(line[1]) if line else 0.0

    before = cancelled()
    # A grammar that needs thousands of characters: the model cannot end its answer before the client
    # gives up (a free answer to "Say hi." sometimes ended within the 2 s).
    long = {"type": "object", "properties": {"a": {"type": "string", "minLength": 4000}}, "required": ["a"]}
    body = {"model": MODEL, "messages": HI, "max_tokens": 2000,
            "response_format": {"type": "json_schema", "json_schema": {"name": "long", "schema": long}}}  # fmt: skip
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway_url}/v1/chat/completions", json=body, headers={"x-api-key": api_key}, timeout=2)
    wait_until(lambda: cancelled() > before, timeout=60, what="the abandoned chat job to be cancelled")


def test_unserved_paths_and_methods_answer_in_openais_shape(gateway_url: str, api_key: str) -> None:
    for query, param in (("limit=0", "limit"), ("limit=101", "limit"), ("order=asc", "order")):
        listing = httpx.get(f"{gateway_url}/v1/videos?{query}", headers={"x-api-key": api_key})
        assert listing.status_code == 400 and listing.json()["error"]["param"] == param, listing.text
    wrong = httpx.get(f"{gateway_url}/v1/chat/completions", headers={"x-api-key": api_key})
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


# -- images -------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def _pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


async def test_image_generation_as_urls_and_as_base64(oai: openai.OpenAI, aoai: openai.AsyncOpenAI) -> None:
    raw = oai.images.with_raw_response.generate(
        prompt="a lighthouse", size="64x64", n=2, extra_body={**SMALL_IMAGE, "seed": 11}
    )
    images = raw.parse()
    assert raw.headers["x-genmesh-job-id"].startswith("img-")
    assert [image.seed for image in images.data] == [11, 12]  # type: ignore[attr-defined]
    for image in images.data:  # presigned URLs, as the rest of genmesh signs them
        fetched = httpx.get(image.url)
        assert fetched.status_code == 200 and _png_size(fetched.content) == (64, 64)
    # The same request as bytes: the same pixels (one image each; a batch may round the last bits apart).
    one = {"prompt": "a lighthouse", "size": "64x64", "extra_body": {**SMALL_IMAGE, "seed": 11}}
    by_url = oai.images.generate(**one)
    inline = await aoai.images.generate(**one, response_format="b64_json")
    assert _pixels(base64.b64decode(inline.data[0].b64_json)) == _pixels(httpx.get(by_url.data[0].url).content)
    with pytest.raises(openai.BadRequestError) as raised:
        oai.images.generate(prompt="a lighthouse", size="64x68", extra_body=SMALL_IMAGE)
    assert raised.value.param == "size" and "size (height) must be a multiple of 8 (got 68)" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        oai.images.generate(prompt="a lighthouse", size="64x64", n=9)
    assert raised.value.param == "n" and "between 1 and 8" in raised.value.message


def test_image_stream_sends_partial_images_from_previews(oai: openai.OpenAI) -> None:
    stream = oai.images.generate(
        prompt="a lighthouse", size="64x64", stream=True, partial_images=2, extra_body={"steps": 6, "seed": 2}
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    for partial in events[:2]:  # genmesh's latent previews: small WebPs
        assert (
            partial.output_format == "webp"
            and Image.open(io.BytesIO(base64.b64decode(partial.b64_json))).format == "WEBP"
        )
    assert events[-1].output_format == "png" and _png_size(base64.b64decode(events[-1].b64_json)) == (64, 64)


def test_image_edit_is_img2img(oai: openai.OpenAI) -> None:
    edited = oai.images.edit(
        image=("in.png", png_bytes(96, 64), "image/png"), prompt="at night", response_format="b64_json",
        extra_body={"steps": 4, "strength": 0.5, "seed": 1},
    )  # fmt: skip
    assert _png_size(base64.b64decode(edited.data[0].b64_json)) == (96, 64)  # the init image's size
    with pytest.raises(openai.BadRequestError) as raised:
        oai.images.edit(
            image=("in.png", png_bytes(), "image/png"), mask=("m.png", png_bytes(), "image/png"), prompt="x"
        )
    assert raised.value.param == "mask"


# -- videos -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")
def test_video_lifecycle(oai: openai.OpenAI, client: GenmeshClient) -> None:
    video = oai.videos.create(prompt="waves", size="64x64", seconds="1", extra_body={"steps": 2, "seed": 4})
    assert video.status == "queued" and video.id.startswith("vid-") and video.seconds == "1"
    deadline = time.monotonic() + 120
    while video.status not in ("completed", "failed") and time.monotonic() < deadline:
        video = oai.videos.retrieve(video.id)
        assert video.status in ("queued", "in_progress", "completed") and 0 <= video.progress <= 100
        time.sleep(0.2)  # polling, as an OpenAI client does
    assert video.status == "completed" and video.progress == 100 and video.size == "64x64", video
    content = oai.videos.download_content(video.id)
    assert content.response.headers["content-type"] == "video/mp4" and content.content[4:8] == b"ftyp"
    thumbnail = oai.videos.download_content(video.id, variant="thumbnail")
    assert _png_size(thumbnail.content) == (64, 64)
    # Deleting a running video cancels its job.
    running = oai.videos.create(prompt="a long one", size="64x64", seconds="2", extra_body={"steps": 150})
    deleted = oai.videos.delete(running.id)
    assert deleted.deleted is True and deleted.id == running.id
    wait_for_state(client, "videos", running.id, job_pb2.JOB_STATE_CANCELLED)
    cancelled = oai.videos.retrieve(running.id)
    assert cancelled.status == "failed" and cancelled.error.code == "cancelled"
    # The caller's videos, newest first, in OpenAI's cursor pages (after = the last id seen).
    first = oai.videos.list(limit=1)
    assert [item.id for item in first.data] == [running.id] and first.has_more
    second = oai.videos.list(limit=1, after=running.id)
    assert [item.id for item in second.data] == [video.id] and second.data[0].status == "completed"
    with pytest.raises(openai.BadRequestError) as raised:
        oai.videos.create(prompt="waves", size="64x64", seconds="20")
    assert raised.value.param == "seconds"
    with pytest.raises(openai.NotFoundError):
        oai.videos.retrieve("vid-0-000000000000000000000000")
