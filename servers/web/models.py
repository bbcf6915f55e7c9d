"""``/v1/models``: every model of every service the front door calls, in OpenAI's shape."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from genmesh.common.v1 import model_pb2
from genmesh.errors import GenmeshError
from genmesh.image.v1 import image_pb2
from genmesh.text.v1 import text_pb2
from genmesh.video.v1 import video_pb2
from servers.web.upstreams import Upstreams, unary

MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by", "service", "services", "loaded", "default"],
    "properties": {
        "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
        "owned_by": {"type": "string"}, "service": {"type": "string"},
        "services": {"type": "array", "items": {"type": "string"}}, "kind": {"type": "string"},
        "smoke_test": {"type": "boolean"}, "description": {"type": "string"}, "loaded": {"type": "boolean"},
        "default": {"type": "boolean"}, "alias_of": {"type": "string"},
        "state": {"enum": ["loaded", "loads_on_first_use", "not_downloaded", "unspecified"]},
    },
}  # fmt: skip
MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL}},
}
_LIST_REQUESTS = {
    "text": text_pb2.ListModelsRequest,
    "image": image_pb2.ListModelsRequest,
    "video": video_pb2.ListModelsRequest,
}


def _entry(service: str, info) -> dict:
    labels = dict(info.labels)
    return {
        "id": info.name,
        "object": "model",
        "created": 0,  # genmesh does not record when a model file appeared
        "owned_by": "genmesh",
        # genmesh's own fields (OpenAI clients ignore what they do not know):
        "service": service,
        "services": [service],
        "kind": labels.get("kind", "model"),
        "smoke_test": labels.get("smoke_test") == "true",
        "description": info.description,
        "loaded": info.loaded,
        # What the first request that uses it waits for (ListModels' ModelInfo.state).
        "state": model_pb2.ModelState.Name(info.state).removeprefix("MODEL_STATE_").lower(),
        "default": info.is_default,
    }


async def list_models(
    upstreams: Upstreams, metadata: Sequence[tuple[str, str]], aliases: Mapping[str, str]
) -> tuple[list[dict], dict[str, str]]:
    """(models, services that did not answer -> why). A name served by several services (a base model
    both Image and Video run) is one entry listing them all."""
    names = [name for name in upstreams.urls if name in _LIST_REQUESTS]  # not the agent nor training
    answers = await asyncio.gather(
        *(unary(name, upstreams.stub(name).ListModels, _LIST_REQUESTS[name](), metadata) for name in names),
        return_exceptions=True,
    )
    models: dict[str, dict] = {}
    down: dict[str, str] = {}
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, GenmeshError):
            down[name] = answer.message
            continue
        if isinstance(answer, BaseException):
            raise answer
        for info in answer.models:
            if info.name in models:
                models[info.name]["services"].append(name)
            else:
                models[info.name] = _entry(name, info)
    for alias, target in aliases.items():
        if target in models and alias not in models:
            models[alias] = {**models[target], "id": alias, "alias_of": target}
    return list(models.values()), down


async def default_model(upstreams: Upstreams, service: str, metadata: Sequence[tuple[str, str]]) -> str:
    """The name of ``service``'s default model (what a request without ``model`` runs), or ''."""
    answer = await unary(service, upstreams.stub(service).ListModels, _LIST_REQUESTS[service](), metadata)
    return next((info.name for info in answer.models if info.is_default), "")
