"""Protobuf <-> Text domain types, with the validation that names fields and ranges."""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format

from genmesh.common.v1 import model_pb2
from genmesh.errors import InvalidArgument, require, require_range, shown
from genmesh.text.v1 import text_pb2
from servers.runtime import convert as common
from servers.runtime import events
from servers.runtime.queue import Job
from servers.text.models import ModelSpec
from servers.text.types import ChatTurn, EmbedOutcome, EmbedRequest, FinishReason, Sampling, TextOutcome, TextRequest
from storage.object_store import StoredObject

MAX_PROMPT_CHARS = 100_000
MAX_MESSAGES = 256
MAX_STOPS = 8
MAX_STOP_CHARS = 256
MAX_TOKENS = 32_768
MAX_INPUTS = 256
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs
ROLES = ("system", "user", "assistant")
FINISH_REASONS = {FinishReason.STOP: text_pb2.FINISH_REASON_STOP, FinishReason.LENGTH: text_pb2.FINISH_REASON_LENGTH}


def sampling_from_proto(message: text_pb2.SamplingOptions) -> Sampling:
    defaults = Sampling()

    def pick(name: str):
        return getattr(message, name) if message.HasField(name) else getattr(defaults, name)

    sampling = Sampling(
        max_tokens=pick("max_tokens"),
        temperature=pick("temperature"),
        top_p=pick("top_p"),
        top_k=pick("top_k"),
        min_p=pick("min_p"),
        repeat_penalty=pick("repeat_penalty"),
        seed=message.seed if message.HasField("seed") else None,
        stop=tuple(message.stop),
    )
    require_range(sampling.max_tokens, "sampling.max_tokens", 1, MAX_TOKENS)
    require_range(sampling.temperature, "sampling.temperature", 0.0, 2.0)
    require(0.0 < sampling.top_p <= 1.0, "sampling.top_p", f"must be in (0, 1] (got {shown(sampling.top_p)})")
    require_range(sampling.top_k, "sampling.top_k", 0, 1000)
    require_range(sampling.min_p, "sampling.min_p", 0.0, 1.0)
    require_range(sampling.repeat_penalty, "sampling.repeat_penalty", 0.5, 2.0)
    if sampling.seed is not None:
        require_range(sampling.seed, "sampling.seed", 0, 2**32 - 1)
    require(len(sampling.stop) <= MAX_STOPS, "sampling.stop", f"at most {MAX_STOPS} stop sequences")
    for stop in sampling.stop:
        require(0 < len(stop) <= MAX_STOP_CHARS, "sampling.stop", f"each stop is 1..{MAX_STOP_CHARS} characters")
    return sampling


def _integral(value: Any) -> Any:
    """protobuf Struct keeps every number as a double: give JSON Schema back its integers
    ("minLength": 2, "enum": [1, 2]), which the grammar converter needs."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _format(message: text_pb2.ResponseFormat) -> tuple[bool, dict | None]:
    require(
        message.type in text_pb2.ResponseFormat.Type.values(),
        "response_format.type",
        f"must be TYPE_TEXT or TYPE_JSON (got {message.type})",
    )
    schema = _integral(json_format.MessageToDict(message.json_schema)) if message.HasField("json_schema") else None
    if message.type == text_pb2.ResponseFormat.TYPE_JSON:
        return True, schema or None
    if schema is not None:
        raise InvalidArgument(
            "response_format.json_schema: only allowed with response_format.type TYPE_JSON",
            field="response_format.json_schema",
        )
    return False, None


def generate_request(message: text_pb2.GenerateRequest) -> TextRequest:
    require(bool(message.prompt.strip()), "prompt", "must not be empty")
    require(len(message.prompt) <= MAX_PROMPT_CHARS, "prompt", f"at most {MAX_PROMPT_CHARS} characters")
    json_output, schema = _format(message.response_format)
    return TextRequest(
        model=message.model,
        prompt=message.prompt,
        sampling=sampling_from_proto(message.sampling),
        json_output=json_output,
        json_schema=schema,
        keep_alive_seconds=common.keep_alive_seconds(message),
        logprobs=_logprobs(message),
    )


def chat_request(message: text_pb2.ChatRequest) -> TextRequest:
    require(1 <= len(message.messages) <= MAX_MESSAGES, "messages", f"must hold 1..{MAX_MESSAGES} messages")
    turns = []
    for index, turn in enumerate(message.messages):
        field = f"messages[{index}]"
        require(turn.role in ROLES, f"{field}.role", f"must be one of {', '.join(ROLES)} (got {turn.role!r})")
        require(len(turn.content) <= MAX_PROMPT_CHARS, f"{field}.content", f"at most {MAX_PROMPT_CHARS} characters")
        turns.append(ChatTurn(turn.role, turn.content))
    require(turns[-1].role == "user", "messages", "the last message must have role 'user'")
    require(any(t.content.strip() for t in turns if t.role == "user"), "messages", "need a non-empty user message")
    json_output, schema = _format(message.response_format)
    return TextRequest(
        model=message.model,
        messages=tuple(turns),
        sampling=sampling_from_proto(message.sampling),
        json_output=json_output,
        json_schema=schema,
        keep_alive_seconds=common.keep_alive_seconds(message),
        logprobs=_logprobs(message),
    )


def _logprobs(message: text_pb2.GenerateRequest | text_pb2.ChatRequest) -> int | None:
    if not message.HasField("logprobs"):
        return None
    require_range(message.logprobs, "logprobs", 0, MAX_TOP_LOGPROBS)
    return message.logprobs


def token_logprobs(tokens: tuple[events.TokenLogprob, ...]) -> list[text_pb2.TokenLogprob]:
    return [
        text_pb2.TokenLogprob(
            token=token.token.decode(errors="replace"),
            logprob=token.logprob,
            bytes=token.token,
            top_logprobs=token_logprobs(token.top),
        )
        for token in tokens
    ]


def text_parameters(request: TextRequest, seed: int) -> text_pb2.TextParameters:
    """What the job was asked, defaults filled in: in the result, and so in the job's record."""
    json_type = text_pb2.ResponseFormat.TYPE_JSON if request.json_output else text_pb2.ResponseFormat.TYPE_TEXT
    parameters = text_pb2.TextParameters(prompt=request.prompt or "", logprobs=request.logprobs)
    parameters.messages.extend(text_pb2.ChatMessage(role=turn.role, content=turn.content) for turn in request.messages)
    parameters.sampling.CopyFrom(text_pb2.SamplingOptions(**{**dataclasses.asdict(request.sampling), "seed": seed}))
    parameters.response_format.type = json_type
    if request.json_schema is not None:
        parameters.response_format.json_schema.update(request.json_schema)
    return parameters


def text_result(
    outcome: TextOutcome,
    record: StoredObject | None,
    queued_seconds: float,
    parameters: text_pb2.TextParameters | None = None,
) -> text_pb2.TextResult:
    return text_pb2.TextResult(
        text=outcome.text,
        finish_reason=FINISH_REASONS[outcome.finish_reason],
        usage=text_pb2.Usage(
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            total_tokens=outcome.prompt_tokens + outcome.completion_tokens,
        ),
        timings=text_pb2.Timings(
            time_to_first_token_ms=outcome.time_to_first_token_ms,
            tokens_per_second=outcome.tokens_per_second,
            total_seconds=outcome.total_seconds,
            queued_seconds=queued_seconds,
        ),
        model=outcome.model,
        seed=outcome.seed,
        record=common.artifact(record),
        logprobs=token_logprobs(outcome.logprobs),
        parameters=parameters,
    )


def embed_request(message: text_pb2.EmbedRequest) -> EmbedRequest:
    """``dimensions`` is checked against the model's size by the engine, once the model is known."""
    count = len(message.inputs)
    require(1 <= count <= MAX_INPUTS, "inputs", f"must hold 1..{MAX_INPUTS} texts (got {count})")
    for index, text in enumerate(message.inputs):
        require(bool(text.strip()), f"inputs[{index}]", "must not be empty")
        require(len(text) <= MAX_PROMPT_CHARS, f"inputs[{index}]", f"at most {MAX_PROMPT_CHARS} characters")
    require(message.dimensions >= 0, "dimensions", f"must be 0 (every component) or more (got {message.dimensions})")
    return EmbedRequest(
        tuple(message.inputs),
        model=message.model,
        dimensions=message.dimensions,
        keep_alive_seconds=common.keep_alive_seconds(message),
    )


def embed_result(outcome: EmbedOutcome) -> text_pb2.EmbedResult:
    total = sum(outcome.tokens)
    return text_pb2.EmbedResult(
        embeddings=[
            text_pb2.Embedding(index=index, values=vector, tokens=tokens)
            for index, (vector, tokens) in enumerate(zip(outcome.vectors, outcome.tokens, strict=True))
        ],
        model=outcome.model,
        dimensions=len(outcome.vectors[0]) if outcome.vectors else 0,
        usage=text_pb2.Usage(prompt_tokens=total, total_tokens=total),
    )


def stream_event(response_type: type, job: Job, event: events.JobEvent):
    """A GenerateResponse, ChatResponse or EmbedResponse for one job event (a watcher of an Embed job
    gets GenerateResponse, whose ``embed_result`` carries the vectors)."""
    fields = common.common_event_fields(job, event)
    match event:
        case events.Output(payload=events.TextDelta(text=text, logprobs=logprobs)):
            fields["delta"] = text_pb2.Delta(text=text, logprobs=token_logprobs(logprobs))
        case events.Succeeded(result=text_pb2.EmbedResult() as result) if response_type is text_pb2.GenerateResponse:
            fields["embed_result"] = result
        case events.Succeeded(result=result):
            fields["result"] = result
    return response_type(**fields)


def job_message(job: Job) -> text_pb2.Job:
    field = "embed_result" if isinstance(job.result, text_pb2.EmbedResult) else "result"
    return text_pb2.Job(status=common.job_status(job), **{field: job.result})


def model_info(spec: ModelSpec, default_name: str, context_length: int, loaded: bool) -> model_pb2.ModelInfo:
    """One model of ListModels: a GGUF file, with the context length the server runs it at."""
    labels = {"format": "gguf", "context_length": str(context_length), "location": spec.location}
    return model_pb2.ModelInfo(
        name=spec.name,
        description=spec.description,
        source=spec.source,
        size_bytes=spec.size_bytes,
        loaded=loaded,
        state=common.model_state(loaded, spec.location),
        is_default=spec.name == default_name,
        labels=labels,
    )
