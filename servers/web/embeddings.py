"""``/v1/embeddings``: OpenAI's request -> a genmesh Embed job on the Text service, and its vectors ->
OpenAI's list of embeddings (floats, or base64 of little-endian float32 as openai-python asks by
default)."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field

from genmesh.text.v1 import text_pb2
from servers.web.errors import invalid
from servers.web.fields import Body, Param, check

ENCODINGS = ("float", "base64")
ANSWER = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"const": "embedding"},
                    "index": {"type": "integer"},
                    "embedding": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
                },
            },
        },
        "model": {"type": "string"},
        "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"]},
    },
}
FIELDS = (
    Param("input", "string|array", "The text to embed, or a list of texts (up to 256); token arrays are refused.",
          required=True, schema={"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
    Param("model", "string", "An embedding model's name or alias; the Text service's default when absent."),
    Param("encoding_format", "string", "Vectors as float lists or base64 of little-endian float32.",
          choices=ENCODINGS),
    Param("dimensions", "integer", "Keep the first N dimensions (1 or more; at most the model's)."),
)  # fmt: skip
PARAMS = {"inputs": "input", "dimensions": "dimensions"}


@dataclass
class EmbedCall:
    request: text_pb2.EmbedRequest
    model: str
    base64: bool
    params: dict[str, str] = field(default_factory=lambda: dict(PARAMS))

    def response(self, result: text_pb2.EmbedResult) -> dict:
        data = []
        for item in result.embeddings:
            values = list(item.values)
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if self.base64 else values
            data.append({"object": "embedding", "index": item.index, "embedding": vector})
        tokens = result.usage.prompt_tokens
        return {
            "object": "list",
            "data": data,
            "model": result.model or self.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def embed_call(body: Body, aliases: dict[str, str]) -> EmbedCall:
    raw = body.data.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list):
        if raw and not isinstance(raw[0], str):
            raise invalid("input", "input: token arrays are not supported; send text")
        inputs = [check(item, "string", f"input[{index}]") for index, item in enumerate(raw)]
    else:
        raise invalid("input", f"input: expected a string or an array of strings (got {type(raw).__name__})")
    encoding = body.get("encoding_format", "string", "float")
    if encoding not in ENCODINGS:
        raise invalid("encoding_format", f"encoding_format: float or base64 (got {encoding!r})")
    model = body.get("model", "string", "")
    request = text_pb2.EmbedRequest(model=aliases.get(model, model), inputs=inputs)
    dimensions = body.get("dimensions", "integer")
    if dimensions is not None:
        if dimensions < 1:  # genmesh's 0 means "all": OpenAI's callers mean a size
            raise invalid("dimensions", f"dimensions: must be 1 or more (got {dimensions})")
        try:
            request.dimensions = dimensions
        except ValueError:
            raise invalid("dimensions", f"dimensions: {dimensions} is out of range") from None
    return EmbedCall(request, model, encoding == "base64")
