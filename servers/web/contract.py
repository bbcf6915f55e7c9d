"""The web front door's part of the OpenAPI document: OpenAI's routes and ``GET /v1/jobs``, generated
from the app's own route table and the ``Param`` specs its handlers read requests by.

The protos describe genmesh's own REST routes (``servers/mesh/openapi.py``); these routes have no
proto, so their source is the code that serves them: ``ROUTES`` gives the paths and methods, each
handler's ``Operation`` names the ``Param`` specs it reads (kinds, ranges from the services' own
limits, choices) and the shape of its answers. ``protos/generate.py`` merges both into
``servers/web/openapi.json``, and fails when a route has no ``Operation`` (or one names no route).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servers.diffusion.params import Limit, Text
from servers.web.errors import ERROR_SCHEMA
from servers.web.fields import Param

OPENAI_ERROR = "openai.Error"
STATUS = "google.rpc.Status"
_PATH_CONVERTER = re.compile(r"\{(\w+):\w+\}")  # Starlette's {model:path} is OpenAPI's {model}


@dataclass(frozen=True)
class Operation:
    """What one route reads and answers. ``body``: a JSON object's fields; ``form``: a
    multipart/form-data request's parts (a route may take both); ``streams``: ``stream: true``
    answers ``text/event-stream`` with ``event`` as each event's data."""

    summary: str
    description: str = ""
    tag: str = "openai"
    path: Sequence[Param] = ()
    query: Sequence[Param] = ()
    body: Sequence[Param] = ()
    form: Sequence[Param] = ()
    answer: Mapping[str, Any] = field(default_factory=dict)  # the 200's JSON Schema
    binary: bool = False  # the 200 is a stored file, with its own content type
    event: Mapping[str, Any] | None = None
    errors: str = OPENAI_ERROR  # the schema of error bodies (GET /v1/jobs answers genmesh's google.rpc.Status)
    statuses: Sequence[int] = (400, 404, 429, 503)
    # The path's id has a shape (``vid-...``): the gateway sends only those here, and answers any other
    # with its own 404 (google.rpc.Status, as on genmesh's routes).
    shaped_id: bool = False


def param_schema(param: Param) -> dict[str, Any]:
    """A parameter's JSON Schema: its kind, its choices, its limit as bounds, its description."""
    kinds = param.kinds
    schema: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else list(kinds)}
    if param.file:
        schema = {"type": "string", "format": "binary"}
    if param.choices:
        schema["enum"] = list(param.choices)
    limit = param.limit
    if isinstance(limit, Limit):
        schema["exclusiveMinimum" if limit.low_open else "minimum"] = limit.low
        schema["maximum"] = limit.high
        if limit.multiple_of:
            schema["multipleOf"] = limit.multiple_of
    elif isinstance(limit, Text):
        schema["maxLength"] = limit.max_chars
        if limit.required:
            schema["pattern"] = r"\S"  # not empty, nor only spaces
    if param.schema:
        schema = {**({} if "anyOf" in param.schema else schema), **param.schema}
    schema["description"] = param.description
    return schema


def _object(params: Iterable[Param]) -> dict[str, Any]:
    params = list(params)
    schema: dict[str, Any] = {"type": "object", "properties": {param.name: param_schema(param) for param in params}}
    required = [param.name for param in params if param.required]
    if required:
        schema["required"] = required
    return schema


def _parameters(where: str, params: Iterable[Param]) -> list[dict[str, Any]]:
    out = []
    for param in params:
        schema = param_schema(param)
        out.append({"name": param.name, "in": where, "required": where == "path" or param.required,
                    "description": schema.pop("description"), "schema": schema})  # fmt: skip
    return out


def operation(op: Operation, operation_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": operation_id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        out["description"] = op.description
    parameters = _parameters("path", op.path) + _parameters("query", op.query)
    if parameters:
        out["parameters"] = parameters
    content: dict[str, Any] = {}
    if op.body:
        content["application/json"] = {"schema": _object(param for param in op.body if not param.file)}
    if op.form:
        files = {param.name: {"contentType": "application/octet-stream"} for param in op.form if param.file}
        content["multipart/form-data"] = {"schema": _object(op.form), **({"encoding": files} if files else {})}
    if content:
        out["requestBody"] = {"required": True, "content": content}
    if op.binary:
        answers: dict[str, Any] = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    else:
        answers = {"application/json": {"schema": dict(op.answer)}}
    if op.event is not None:
        answers["text/event-stream"] = {"schema": dict(op.event)}
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.errors}"}}}
    ok = "OK" if op.event is None else "OK: JSON, or server-sent events with `stream: true`."
    responses: dict[str, Any] = {"200": {"description": ok, "content": answers}}
    descriptions = {
        400: "A parameter is invalid: the error names it.",
        401: "No API key, or an unknown one.",
        403: "This key may not (all_clients needs an admin key).",
        404: "Not found (a model, an id).",
        409: "Not ready yet.",
        429: "Rate limit or a full queue; retry later.",
        503: "A service is down; retry later.",
    }
    for status in sorted({*op.statuses, 401}):
        responses[str(status)] = {"description": descriptions[status]}
        if status != 401:  # the gateway's key check answers without a body
            responses[str(status)]["content"] = error
    if op.shaped_id:
        either = {"anyOf": [{"$ref": f"#/components/schemas/{op.errors}"}, {"$ref": f"#/components/schemas/{STATUS}"}]}
        responses["404"] = {
            "description": "Not found. An id not shaped like one (its pattern) is no route of the front door: "
            "the gateway answers it as on genmesh's own routes (google.rpc.Status).",
            "content": {"application/json": {"schema": either}},
        }
    responses["default"] = {"description": "Any other error.", "content": error}
    out["responses"] = responses
    return out


def openapi_path(route_path: str) -> str:
    return _PATH_CONVERTER.sub(lambda match: "{" + match.group(1) + "}", route_path)


def web_paths(
    routes: Iterable[Any], operations: Mapping[Callable[..., Any], Operation], served: Callable[[str], bool]
) -> dict[str, dict[str, Any]]:
    """The document's paths for every route of the app the gateway sends here (``served``), each from
    its handler's ``Operation``; a route without one (or an ``Operation`` of no route) is an error."""
    paths: dict[str, dict[str, Any]] = {}
    used = set()
    for route in routes:
        methods = sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"})
        if not methods or not served(route.path):
            continue
        if route.endpoint not in operations:
            raise LookupError(f"{'/'.join(methods)} {route.path} ({route.endpoint.__name__}) has no Operation")
        used.add(route.endpoint)
        for method in methods:
            name = route.endpoint.__name__
            paths.setdefault(openapi_path(route.path), {})[method.lower()] = operation(operations[route.endpoint], name)
    unused = [endpoint.__name__ for endpoint in operations if endpoint not in used]
    if unused:
        raise LookupError(f"Operations of no served route: {', '.join(unused)}")
    return paths


def merge_into(document: dict[str, Any], paths: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The protos' document with the web front door's paths, its error schema and tags added."""
    clash = set(paths) & set(document["paths"])
    if clash:
        raise ValueError(f"paths both transcoded and served by the web front door: {sorted(clash)}")
    document["paths"] = dict(sorted({**document["paths"], **paths}.items()))
    document["components"]["schemas"][OPENAI_ERROR] = dict(ERROR_SCHEMA)
    document["components"]["schemas"] = dict(sorted(document["components"]["schemas"].items()))
    tags = {tag["name"]: tag for tag in document["tags"]}
    tags["openai"] = {"name": "openai", "description": "OpenAI-compatible routes (the web front door): OpenAI's "
                      "shapes and error bodies; fields genmesh does not know are ignored and listed in the "
                      "x-genmesh-ignored-fields response header."}  # fmt: skip
    tags["jobs"] = {"name": "jobs", "description": "The caller's jobs across every service (the web front door)."}
    document["tags"] = [tags[name] for name in sorted(tags)]
    return document
