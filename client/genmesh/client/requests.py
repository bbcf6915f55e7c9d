"""Keyword arguments -> request messages (shared by the sync and async clients)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2

from genmesh.text.v1 import text_pb2

ChatMessages = Sequence[Mapping[str, str] | tuple[str, str] | text_pb2.ChatMessage]


def sampling(
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    repeat_penalty: float | None = None,
    seed: int | None = None,
    stop: Iterable[str] = (),
) -> text_pb2.SamplingOptions:
    options = text_pb2.SamplingOptions(stop=list(stop))
    values = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "repeat_penalty": repeat_penalty,
        "seed": seed,
    }
    for name, value in values.items():
        if value is not None:
            setattr(options, name, value)
    return options


def response_format(json: bool, json_schema: Mapping[str, Any] | None) -> text_pb2.ResponseFormat | None:
    if json_schema is not None:
        schema = struct_pb2.Struct()
        schema.update(dict(json_schema))
        return text_pb2.ResponseFormat(type=text_pb2.ResponseFormat.TYPE_JSON, json_schema=schema)
    if json:
        return text_pb2.ResponseFormat(type=text_pb2.ResponseFormat.TYPE_JSON)
    return None


def chat_messages(messages: ChatMessages) -> list[text_pb2.ChatMessage]:
    result = []
    for message in messages:
        if isinstance(message, text_pb2.ChatMessage):
            result.append(message)
        elif isinstance(message, tuple):
            result.append(text_pb2.ChatMessage(role=message[0], content=message[1]))
        else:
            result.append(text_pb2.ChatMessage(role=message["role"], content=message["content"]))
    return result


def generate_request(
    prompt: str, *, model: str = "", detach: bool = False, json: bool = False, json_schema: Any = None, **options: Any
) -> text_pb2.GenerateRequest:
    return text_pb2.GenerateRequest(
        model=model,
        prompt=prompt,
        sampling=sampling(**options),
        response_format=response_format(json, json_schema),
        detach=detach,
    )


def chat_request(
    messages: ChatMessages,
    *,
    model: str = "",
    detach: bool = False,
    json: bool = False,
    json_schema: Any = None,
    **options: Any,
) -> text_pb2.ChatRequest:
    return text_pb2.ChatRequest(
        model=model,
        messages=chat_messages(messages),
        sampling=sampling(**options),
        response_format=response_format(json, json_schema),
        detach=detach,
    )
