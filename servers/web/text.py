"""``/v1/chat/completions`` and ``/v1/completions``: OpenAI's request -> a genmesh Chat or Generate
request, and the genmesh result or events -> OpenAI's objects and stream chunks."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2

from genmesh.text.v1 import text_pb2
from servers.web import tools as tooling
from servers.web.errors import invalid
from servers.web.fields import Body, Param, assign, check, type_name

_MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "description": "system, developer (read as system), user, assistant or tool"},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "null"},
                {"type": "array", "items": {"type": "object", "properties": {
                    "type": {"const": "text"}, "text": {"type": "string"}}, "required": ["type", "text"]}},
            ]
        },
    },
    "required": ["role"],
}  # fmt: skip
SAMPLING_FIELDS = (
    Param("model", "string", "A model name or alias (GET /v1/models); the Text service's default when absent."),
    Param("max_tokens", "integer", "Most tokens to generate (1..32768, the Text service checks it; default 256)."),
    Param("max_completion_tokens", "integer", "OpenAI's newer name for max_tokens; wins over it when both are set."),
    Param("temperature", "number", "Sampling temperature, 0..2."),
    Param("top_p", "number", "Nucleus sampling, greater than 0 and at most 1."),
    Param("stop", "string|array", "A stop sequence or up to 8 of them (1..256 characters each).",
          schema={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
    Param("seed", "integer", "Sampling seed, 0..4294967295 (same seed, same answer)."),
    Param("n", "integer", "Choices per request: only 1.", choices=(1,)),
    Param("stream", "boolean", "Answer as server-sent events (chunks, then `data: [DONE]`)."),
    Param("stream_options", "object", "`{\"include_usage\": true}` adds a usage chunk before [DONE].",
          schema={"type": "object", "properties": {"include_usage": {"type": "boolean"}}}),
    Param("response_format", "object", "`text`, `json_object` or `json_schema` (with `json_schema.schema`): "
          "the answer is constrained to JSON matching the schema.",
          schema={"type": "object", "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}},
                  "required": ["type"]}),
    # genmesh's (and llama.cpp's server's) own sampling knobs, as extras
    Param("top_k", "integer", "genmesh's own: top-k sampling, 0..1000 (0: off)."),
    Param("min_p", "number", "genmesh's own: min-p sampling, 0..1."),
    Param("repeat_penalty", "number", "genmesh's own: repetition penalty, 0.5..2."),
)  # fmt: skip
CHAT_FIELDS = (
    *SAMPLING_FIELDS,
    Param("messages", "array", "The conversation; content is a string or a list of text parts.", required=True,
          schema={"type": "array", "items": _MESSAGE}),
    Param("tools", "array", "Functions the model may call (`{\"type\": \"function\", \"function\": {name, "
          "description, parameters}}`); the answer is constrained to tool calls or content.",
          schema={"type": "array", "items": {"type": "object"}}),
    Param("tool_choice", "string|object", "`auto`, `none`, `required` or `{\"type\": \"function\", "
          "\"function\": {\"name\": ...}}`.", schema={"anyOf": [{"type": "string"}, {"type": "object"}]}),
    Param("parallel_tool_calls", "boolean", "More than one tool call in an answer (default true)."),
    Param("functions", "array", "The deprecated form of tools: refused (send tools)."),
    Param("logprobs", "boolean", "Return each answer token's log probability (`choices[].logprobs.content`); "
          "null for a tool-call answer."),
    Param("top_logprobs", "integer", "With logprobs: the likeliest alternatives per token, 0..20."),
)  # fmt: skip
COMPLETION_FIELDS = (
    *SAMPLING_FIELDS,
    Param("prompt", "string|array", "The text to continue (a list of exactly one string is accepted too).",
          required=True, schema={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
    Param("logprobs", "integer", "Each token's log probability and this many likeliest alternatives, 0..5 "
          "(`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`)."),
)  # fmt: skip
MAX_TOP_LOGPROBS = {True: 20, False: 5}  # chat's top_logprobs, completions' logprobs (OpenAI's limits)
# The answers' shapes (the OpenAPI document's; tests check what completion() and the chunks give).
_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {name: {"type": "integer"} for name in ("prompt_tokens", "completion_tokens", "total_tokens")},
}
_FINISH = {"enum": ["stop", "length", "tool_calls", None]}


def _answer(kind: str, choice: dict) -> dict:
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": kind},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "usage": {"anyOf": [_USAGE, {"type": "null"}]},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "finish_reason"],
                    "properties": {"index": {"type": "integer"}, "finish_reason": _FINISH, **choice},
                },
            },
        },
    }


_MESSAGE_OUT = {"type": "object", "required": ["role"], "properties": {"role": {"const": "assistant"}}}
CHAT_ANSWER = _answer("chat.completion", {"message": _MESSAGE_OUT})
COMPLETION_ANSWER = _answer("text_completion", {"text": {"type": "string"}})
CHAT_CHUNK = _answer("chat.completion.chunk", {"delta": {"type": "object"}})
COMPLETION_CHUNK = COMPLETION_ANSWER
FINISH_REASONS = {text_pb2.FINISH_REASON_STOP: "stop", text_pb2.FINISH_REASON_LENGTH: "length"}
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role


@dataclass
class TextCall:
    """A prepared Chat or Generate call and how to answer it."""

    chat: bool
    request: Any  # text_pb2.ChatRequest or text_pb2.GenerateRequest
    model: str  # as the caller named it (echoed in every chunk, as OpenAI does)
    stream: bool
    include_usage: bool
    params: dict[str, str] = field(default_factory=dict)  # genmesh field -> OpenAI parameter
    created: int = field(default_factory=lambda: int(time.time()))
    tools: tooling.Tools | None = None  # the answer is constrained to tool calls or content
    logprobs: bool = False  # report each token's log probability
    text_offset: int = 0  # completions: where the next token starts in prompt + completion

    @property
    def method(self) -> str:
        return "Chat" if self.chat else "Generate"

    def completion_id(self, job_id: str) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + job_id

    # -- whole answers ------------------------------------------------------------------------

    def completion(self, job_id: str, result: text_pb2.TextResult) -> dict:
        finish = FINISH_REASONS.get(result.finish_reason, "stop")
        if self.chat:
            content, calls = tooling.answer(result.text, job_id) if self.tools else (result.text, [])
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if calls:
                message["tool_calls"], finish = calls, "tool_calls"
            logprobs = self.logprobs_object(result.logprobs) if not calls else None
            choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
        else:
            logprobs = self.logprobs_object(result.logprobs)
            choice = {"text": result.text, "index": 0, "logprobs": logprobs, "finish_reason": finish}
        return {
            "id": self.completion_id(job_id),
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": result.model or self.model,
            "choices": [choice],
            "usage": usage(result.usage),
            "system_fingerprint": None,
        }

    # -- stream chunks ------------------------------------------------------------------------

    def chunk(self, job_id: str, choices: list[dict]) -> dict:
        chunk = {
            "id": self.completion_id(job_id),
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None  # every chunk but the last carries a null usage (OpenAI's framing)
        return chunk

    def delta(
        self,
        job_id: str,
        text: str | None,
        finish_reason: str | None = None,
        *,
        first: bool = False,
        tokens: Sequence[text_pb2.TokenLogprob] = (),
    ) -> dict:
        """One choice's piece: the role first (chat), then text (with its tokens' log probabilities
        when asked), then an empty delta with the reason."""
        logprobs = self.logprobs_object(tokens) if text and self.logprobs else None
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        else:
            choice = {"text": text or "", "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}
        return self.chunk(job_id, [choice])

    def logprobs_object(self, tokens: Sequence[text_pb2.TokenLogprob]) -> dict | None:
        """OpenAI's ``logprobs`` of a choice: chat's ``{"content": [...]}`` with bytes and
        ``top_logprobs`` per token, or the completions API's parallel lists (``top_logprobs`` maps
        the alternatives and the sampled token to their log probabilities, as OpenAI's does)."""
        if not self.logprobs:
            return None
        if self.chat:
            return {"content": [_chat_token(token) for token in tokens], "refusal": None}
        offsets = []
        for token in tokens:
            offsets.append(self.text_offset)
            self.text_offset += len(token.token)
        return {
            "tokens": [token.token for token in tokens],
            "token_logprobs": [token.logprob for token in tokens],
            "top_logprobs": [
                {**{alt.token: alt.logprob for alt in token.top_logprobs}, token.token: token.logprob}
                for token in tokens
            ],
            "text_offset": offsets,
        }

    def final(self, job_id: str, result: text_pb2.TextResult) -> list[dict]:
        """The chunk with the finish reason, then (if asked) the usage chunk with no choices. With
        tools the answer is whole only at the end: its content or its tool calls (one delta each,
        with its ``index``) come here, before the finish reason."""
        finish = FINISH_REASONS.get(result.finish_reason, "stop")
        chunks = []
        if self.tools:
            content, calls = tooling.answer(result.text, job_id)
            for index, call in enumerate(calls):
                delta = {"tool_calls": [{"index": index, **call}]}
                chunks.append(
                    self.chunk(job_id, [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
                )
            if calls:
                finish = "tool_calls"
            elif content:
                chunks.append(self.delta(job_id, content))
        chunks.append(self.delta(job_id, None, finish))
        if self.include_usage:
            chunks.append({**self.chunk(job_id, []), "usage": usage(result.usage)})
        return chunks


def _chat_token(token: text_pb2.TokenLogprob) -> dict:
    return {
        "token": token.token,
        "logprob": token.logprob,
        "bytes": list(token.bytes),
        "top_logprobs": [
            {"token": alt.token, "logprob": alt.logprob, "bytes": list(alt.bytes)} for alt in token.top_logprobs
        ],
    }


def usage(message: text_pb2.Usage) -> dict:
    return {
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "total_tokens": message.total_tokens,
    }


# -- requests ---------------------------------------------------------------------------------


def sampling(body: Body) -> tuple[text_pb2.SamplingOptions, dict[str, str]]:
    """The sampling options the caller set (the rest keep genmesh's defaults), and the parameter names."""
    options = text_pb2.SamplingOptions()
    limit_param = "max_completion_tokens" if body.has("max_completion_tokens") else "max_tokens"
    params = {"sampling.max_tokens": limit_param}
    limit = body.get(limit_param, "integer")
    if limit is not None:
        assign(options, "max_tokens", limit, limit_param)
    for name, kind in (("temperature", "number"), ("top_p", "number"), ("min_p", "number"),
                       ("repeat_penalty", "number"), ("top_k", "integer"), ("seed", "integer")):  # fmt: skip
        params[f"sampling.{name}"] = name
        value = body.get(name, kind)
        if value is not None:
            assign(options, name, value, name)
    stop = body.data.get("stop")
    if isinstance(stop, str):
        options.stop.append(stop)
    elif isinstance(stop, list):
        options.stop.extend(check(item, "string", f"stop[{index}]") for index, item in enumerate(stop))
    elif stop is not None:
        raise invalid("stop", f"stop: expected a string or an array of strings, got {type_name(stop)}")
    params["sampling.stop"] = "stop"
    n = body.get("n", "integer", 1)
    if n != 1:
        raise invalid("n", f"n: only one choice per request is supported (got {n})")
    return options, params


def response_format(body: Body) -> text_pb2.ResponseFormat | None:
    """OpenAI's ``text`` / ``json_object`` / ``json_schema`` (``{"json_schema": {"name", "schema",
    "strict"}}``), and llama.cpp's server's shapes (``{"type": "json_object", "schema": {...}}``,
    ``{"type": "json_schema", "schema": {...}}``)."""
    value = body.get("response_format", "object")
    if value is None:
        return None
    kind = check(value.get("type"), "string", "response_format.type")
    if kind == "text":
        return text_pb2.ResponseFormat(type=text_pb2.ResponseFormat.TYPE_TEXT)
    if kind not in ("json_object", "json_schema"):
        raise invalid("response_format.type", f"response_format.type: text, json_object or json_schema (got {kind!r})")
    schema = value.get("schema")
    if kind == "json_schema" and schema is None:
        spec = check(value.get("json_schema"), "object", "response_format.json_schema")
        schema = spec.get("schema")
        param = "response_format.json_schema.schema"
    else:
        param = "response_format.schema"
    message = text_pb2.ResponseFormat(type=text_pb2.ResponseFormat.TYPE_JSON)
    if schema is not None:
        message.json_schema.CopyFrom(_struct(check(schema, "object", param)))
    return message


def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _content(value: Any, param: str) -> str:
    """A message's content: a string, or a list of text parts (joined by newlines)."""
    if value is None:
        return ""
    if isinstance(value, list):
        texts = []
        for index, part in enumerate(value):
            part = check(part, "object", f"{param}[{index}]")
            kind = part.get("type")
            if kind != "text":
                raise invalid(f"{param}[{index}].type", f"{param}[{index}].type: only text parts are supported "
                              f"(got {kind!r})")  # fmt: skip
            texts.append(check(part.get("text"), "string", f"{param}[{index}].text"))
        return "\n".join(texts)
    return check(value, "string", param)


def _stream_options(body: Body) -> tuple[bool, bool]:
    stream = body.get("stream", "boolean", False)
    options = body.get("stream_options", "object") or {}
    include_usage = options.get("include_usage")
    include_usage = False if include_usage is None else check(include_usage, "boolean", "stream_options.include_usage")
    return stream, stream and include_usage


def chat_call(body: Body, aliases: Mapping[str, str]) -> TextCall:
    if body.get("functions", "array"):
        raise invalid("functions", "functions: the deprecated form is not supported; send tools")
    parallel = body.get("parallel_tool_calls", "boolean", True)
    tools = tooling.parse_tools(body.data.get("tools"), body.data.get("tool_choice"), parallel)
    messages = check(body.data.get("messages"), "array", "messages")
    turns = [text_pb2.ChatMessage(role="system", content=tools.instructions())] if tools else []
    for index, item in enumerate(messages):
        item = check(item, "object", f"messages[{index}]")
        if (written := tooling.message_text(item, index)) is not None:
            turns.append(text_pb2.ChatMessage(role=written[0], content=written[1]))
            continue
        role = check(item.get("role"), "string", f"messages[{index}].role")
        content = _content(item.get("content"), f"messages[{index}].content")
        turns.append(text_pb2.ChatMessage(role=ROLE_ALIASES.get(role, role), content=content))
    options, params = sampling(body)
    model = body.get("model", "string", "")
    request = text_pb2.ChatRequest(model=aliases.get(model, model), messages=turns, sampling=options)
    params.update(_format_params())
    fmt = response_format(body)
    if tools and fmt is not None:
        raise invalid("response_format", "response_format: not with tools (the answer is constrained to tool calls)")
    if tools:
        fmt = text_pb2.ResponseFormat(type=text_pb2.ResponseFormat.TYPE_JSON)
        fmt.json_schema.CopyFrom(_struct(tools.schema()))
        params["response_format.json_schema"] = "tools"
    if fmt is not None:
        request.response_format.CopyFrom(fmt)
    stream, include_usage = _stream_options(body)
    wanted = body.get("logprobs", "boolean", False)
    top = body.get("top_logprobs", "integer")
    if top is not None and not wanted:
        raise invalid("top_logprobs", "top_logprobs: only with logprobs: true")
    if wanted:
        _ask_logprobs(request, top or 0, "top_logprobs", params)
    return TextCall(True, request, model, stream, include_usage, params, tools=tools, logprobs=wanted)


def completion_call(body: Body, aliases: Mapping[str, str]) -> TextCall:
    prompt = body.data.get("prompt")
    if isinstance(prompt, list):  # OpenAI accepts a batch; genmesh runs one prompt per job
        if len(prompt) != 1:
            raise invalid("prompt", f"prompt: one prompt per request is supported (got a list of {len(prompt)})")
        prompt = check(prompt[0], "string", "prompt[0]")
    prompt = check(prompt, "string", "prompt")
    options, params = sampling(body)
    model = body.get("model", "string", "")
    request = text_pb2.GenerateRequest(model=aliases.get(model, model), prompt=prompt, sampling=options)
    if (fmt := response_format(body)) is not None:
        request.response_format.CopyFrom(fmt)
    stream, include_usage = _stream_options(body)
    params.update(_format_params())
    top = body.get("logprobs", "integer")
    if top is not None:
        _ask_logprobs(request, top, "logprobs", params)
    return TextCall(False, request, model, stream, include_usage, params, logprobs=top is not None,
                    text_offset=len(prompt))  # fmt: skip


def _ask_logprobs(request: Any, top: int, param: str, params: dict[str, str]) -> None:
    """OpenAI's limit (20 alternatives in chat, 5 in completions) is checked here; genmesh's own
    range (0..20) by the server, named after the OpenAI parameter."""
    chat = param == "top_logprobs"
    limit = MAX_TOP_LOGPROBS[chat]
    if not 0 <= top <= limit:
        raise invalid(param, f"{param} must be between 0 and {limit} (got {top})")
    request.logprobs = top
    params["logprobs"] = param


def _format_params() -> dict[str, str]:
    return {"response_format.json_schema": "response_format", "response_format.type": "response_format.type"}
