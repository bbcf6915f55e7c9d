"""genmesh's REST contract as an OpenAPI 3.1 document, generated from the protos.

The same descriptors the gateway transcodes with (routes from ``google.api.http``, request and
response messages), plus the protos' comments as descriptions, so the document cannot drift from
what the gateway does: ``protos/generate.py`` writes it beside Envoy's descriptor set and a test
fails when the committed copy is stale.

How the gateway's JSON looks, and so how the document describes it: field names as in the protos
(``preserve_proto_field_names``; the transcoder also accepts the lowerCamel spelling on input),
enums by name, 64-bit integers as strings, ``bytes`` as base64, oneof members documented as such,
server-streaming RPCs as ``text/event-stream`` (one ``data: {json}`` frame per message, and a
genmesh stream carries its own error as its last event, because HTTP/1.1 clients cannot see
trailers), errors as ``google.rpc.Status`` with ``google.rpc.BadRequest`` details naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, MethodDescriptor

from servers.mesh.request_fields import descriptor_files, http_bindings

API_KEY_HEADER = "x-api-key"
_TEMPLATE_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")
_INT64 = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_SINT64,
}  # fmt: skip
_INT32 = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SINT32,
}  # fmt: skip
_UNSIGNED = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
# "1..150", "0.0..30.0", "1..10000 characters": the first range a field's comment states.
_RANGE = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)(?!\w|\.\d)( characters)?")
# "typically 15..50": a range that describes usual values (of a metric) and limits nothing.
_DESCRIBES = re.compile(r"\b(typically|usually|often|about|around)\s*$")
# Well-known types with a JSON form of their own.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "format": "int32", "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "int64"},
}
STATUS_SCHEMA = "google.rpc.Status"


def _comments(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """Leading comments of messages, fields, enums, enum values, services and methods, by full name."""
    found: dict[str, str] = {}
    for file in files:
        locations = {
            tuple(location.path): location.leading_comments.strip() for location in file.source_code_info.location
        }
        # (path in the file's descriptor, full name, descriptor proto): 4 = message_type, 5 = enum_type, 6 = service.
        pending: list[tuple[tuple[int, ...], str, Any]] = [
            *(
                ((4, index), f"{file.package}.{message.name}", message)
                for index, message in enumerate(file.message_type)
            ),
            *(((5, index), f"{file.package}.{enum.name}", enum) for index, enum in enumerate(file.enum_type)),
            *(((6, index), f"{file.package}.{service.name}", service) for index, service in enumerate(file.service)),
        ]
        while pending:
            path, name, node = pending.pop()
            if locations.get(path):
                found[name] = "\n".join(line.strip() for line in locations[path].splitlines())
            children: list[tuple[int, list[Any]]] = []
            if isinstance(node, descriptor_pb2.DescriptorProto):
                children = [
                    (2, list(node.field)),
                    (3, list(node.nested_type)),
                    (4, list(node.enum_type)),
                ]
            elif isinstance(node, descriptor_pb2.EnumDescriptorProto):
                children = [(2, list(node.value))]
            elif isinstance(node, descriptor_pb2.ServiceDescriptorProto):
                children = [(2, list(node.method))]
            for tag, items in children:
                pending.extend(((*path, tag, index), f"{name}.{item.name}", item) for index, item in enumerate(items))
    return found


class _Builder:
    def __init__(self, pool: descriptor_pool.DescriptorPool, comments: dict[str, str]) -> None:
        self.pool = pool
        self.comments = comments
        self.schemas: dict[str, Any] = {}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.schemas:
            self.schemas[message.full_name] = {}  # placeholder first: messages may refer to themselves
            self.schemas[message.full_name] = self.message_schema(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def enum_schema(self, enum: EnumDescriptor) -> dict[str, Any]:
        values = [value.name for value in enum.values]
        lines = [f"- `{value.name}`: {self.comments[f'{enum.full_name}.{value.name}']}" for value in enum.values
                 if f"{enum.full_name}.{value.name}" in self.comments]  # fmt: skip
        schema: dict[str, Any] = {"type": "string", "enum": values}
        description = "\n".join(filter(None, [self.comments.get(enum.full_name, ""), *lines]))
        if description:
            schema["description"] = description
        return schema

    def value_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self.ref(field.message_type)
        if kind == FieldDescriptor.TYPE_ENUM:
            return self.enum_schema(field.enum_type)
        if kind in _INT64:
            return {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
        if kind in _INT32:
            schema: dict[str, Any] = {"type": "integer", "format": "int32"}
            if kind in _UNSIGNED:
                schema["minimum"] = 0
            return schema
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return {"type": "number"}
        if kind == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == FieldDescriptor.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        return {"type": "string"}

    def field_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.value_schema(value)}
            if key.type in _INT64 | _INT32:
                schema["propertyNames"] = {"pattern": r"^-?[0-9]+$"}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.value_schema(field)}
        else:
            schema = self.value_schema(field)
        notes = []
        comment = self.comments.get(f"{field.containing_type.full_name}.{field.name}")
        if comment:
            notes.append(comment)
            if not field.is_repeated:
                schema = _with_range(schema, comment, presence=bool(getattr(field, "has_presence", False)))
        oneof = field.containing_oneof
        if oneof is not None and not _synthetic(field):
            others = [f"`{other.name}`" for other in oneof.fields if other is not field]
            notes.append(f"One of `{oneof.name}`: at most one of this field and {', '.join(others)}.")
        if notes:
            if "$ref" in schema:  # siblings of $ref are allowed in 3.1; keep the reference intact
                schema = {"$ref": schema["$ref"], "description": "\n\n".join(notes)}
            else:
                schema["description"] = "\n\n".join(notes)
        return schema

    def message_schema(self, message: Descriptor, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
        properties = {field.name: self.field_schema(field) for field in message.fields if field.name not in skip}
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if message.full_name in self.comments:
            schema["description"] = self.comments[message.full_name]
        return schema

    def scalar_parameter(self, field: FieldDescriptor, where: str, name: str) -> dict[str, Any] | None:
        """A path or query parameter for a scalar (or repeated scalar) field; None for messages."""
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in _WELL_KNOWN:
            return None
        schema = self.field_schema(field)
        parameter: dict[str, Any] = {"name": name, "in": where, "required": where == "path", "schema": schema}
        if field.is_repeated:
            parameter["explode"] = True
        description = schema.pop("description", None) if isinstance(schema, dict) else None
        if description:
            parameter["description"] = description
        return parameter

    def query_parameters(self, message: Descriptor, skip: set[str], prefix: str = "") -> list[dict[str, Any]]:
        """Every field not in the path or body, as the transcoder reads them: ``a.b=...`` for nested ones."""
        parameters = []
        for field in message.fields:
            name = f"{prefix}{field.name}"
            if name in skip:
                continue
            if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in _WELL_KNOWN:
                if not field.is_repeated and prefix.count(".") < 2:
                    parameters.extend(self.query_parameters(field.message_type, skip, f"{name}."))
                continue
            parameter = self.scalar_parameter(field, "query", name)
            if parameter is not None:
                parameters.append(parameter)
        return parameters

    def operation(self, service: str, method: MethodDescriptor, verb: str, template: str, body: str) -> dict:
        path_fields = [match.group(1) for match in _TEMPLATE_VARIABLE.finditer(template)]
        request = method.input_type
        parameters = []
        for name in path_fields:
            field = _nested_field(request, name)
            parameter = self.scalar_parameter(field, "path", name) if field is not None else None
            parameters.append(parameter or {"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
        operation: dict[str, Any] = {
            "operationId": f"{service.rsplit('.', 1)[-1]}_{method.name}",
            "tags": [service.split(".")[1] if service.startswith("genmesh.") else service],
            "summary": f"{service.rsplit('.', 1)[-1]}.{method.name}",
        }
        description = self.comments.get(f"{service}.{method.name}")
        if description:
            operation["description"] = description
        if body == "*":
            top_level = frozenset(name for name in path_fields if "." not in name)
            if top_level:  # the path's fields are not in the body: a schema of its own without them
                ref = f"{request.full_name}.Body"
                self.schemas[ref] = self.message_schema(request, skip=top_level)
            else:
                self.ref(request)
                ref = request.full_name
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
            }
        elif body:
            field = request.fields_by_name[body]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": self.value_schema(field)}},
            }
            parameters.extend(self.query_parameters(request, {*path_fields, body}))
        else:
            parameters.extend(self.query_parameters(request, set(path_fields)))
        if parameters:
            operation["parameters"] = parameters
        response = self.ref(method.output_type)
        if method.server_streaming:
            content = {"text/event-stream": {"schema": sse_event(response)}}
            summary = (
                "A stream of server-sent events, one `data: {json}` frame per message (the schema is "
                "each event's: its data is the message as JSON). The first arrives at once; an error "
                "ends the stream as its last event as well as in the gRPC status."
            )
        elif method.output_type.full_name == "google.api.HttpBody":
            content = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
            summary = "The raw bytes, with their own content type."
        else:
            content = {"application/json": {"schema": response}}
            summary = "OK"
        status = {"$ref": f"#/components/schemas/{STATUS_SCHEMA}"}
        error = {"content": {"application/json": {"schema": status}}}
        operation["responses"] = {
            "200": {"description": summary, "content": content},
            "400": {"description": "A field is invalid: `details` names it (google.rpc.BadRequest).", **error},
            "401": {"description": "No API key, or an unknown one."},
            "404": {"description": "Not found (an id, a model, a path).", **error},
            "429": {"description": "Rate limit or a full queue; retry later.", **error},
            "503": {"description": "A service is down or still loading its model.", **error},
            "default": {"description": "Any other error, as google.rpc.Status.", **error},
        }
        return operation


def sse_event(data: Mapping[str, Any], done: bool = False) -> dict[str, Any]:
    """An event whose ``data`` is JSON matching ``data`` (as OpenAPI 3.1 describes an event stream:
    the schema is each event's, ``contentSchema`` its payload's); ``done``: or OpenAI's ``[DONE]``."""
    payload: dict[str, Any] = {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
    if done:
        payload = {"type": "string", "if": {"const": "[DONE]"}, "else": payload}
    return {"type": "object", "properties": {"data": payload, "event": {"type": "string"}}, "required": ["data"]}


def _with_range(schema: dict[str, Any], comment: str, presence: bool) -> dict[str, Any]:
    """The range a field's comment states (``Denoising steps, 1..150.``, ``1..10000 characters``) as
    JSON Schema bounds. A number without presence cannot tell 0 from unset: 0 means the default
    there, so it stays allowed beside the range."""
    match = _RANGE.search(comment)
    if match is None or _DESCRIBES.search(comment[: match.start()]):
        return schema
    low, high = (float(value) if "." in value else int(value) for value in match.group(1, 2))
    kind = schema.get("type")
    if kind == "string" and match.group(3) and "format" not in schema and "enum" not in schema:
        return {**schema, "minLength": int(low), "maxLength": int(high)}  # "" is a value, not a default
    if kind not in ("integer", "number"):
        return schema
    bounds = {"minimum": low, "maximum": high}
    if presence or low <= 0 <= high:
        return {**schema, **bounds}
    return {**schema, "anyOf": [{"const": 0}, bounds]}


def _synthetic(field: FieldDescriptor) -> bool:
    """proto3 ``optional`` wraps a field in a oneof of its own, which constrains nothing."""
    return bool(getattr(field, "has_presence", False)) and field.containing_oneof.name == f"_{field.name}"


def _nested_field(message: Descriptor, dotted: str) -> FieldDescriptor | None:
    field = None
    for part in dotted.split("."):
        if message is None or part not in message.fields_by_name:
            return None
        field = message.fields_by_name[part]
        message = field.message_type
    return field


def openapi_path(template: str) -> str:
    """``/v1/images/jobs/{job_id}:cancel`` stays as it is; ``{name=models/*}`` becomes ``{name}``."""
    return _TEMPLATE_VARIABLE.sub(lambda match: "{" + match.group(1) + "}", template)


def build_openapi(descriptor_set: bytes, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every genmesh route, from a descriptor set (with source info for
    the descriptions; without it the document has no prose, and is otherwise the same)."""
    files, pool = descriptor_files(descriptor_set)
    builder = _Builder(pool, _comments(files))
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, str] = {}
    for binding in http_bindings(files, pool):
        service = binding.service.full_name
        if not service.startswith("genmesh."):
            continue
        tags.setdefault(service.split(".")[1], builder.comments.get(service, service))
        path = paths.setdefault(openapi_path(binding.template), {})
        path[binding.verb] = builder.operation(service, binding.method, binding.verb, binding.template, binding.body)
    builder.ref(pool.FindMessageTypeByName(STATUS_SCHEMA))
    builder.ref(pool.FindMessageTypeByName("google.rpc.BadRequest"))
    # Status.details are Any: say what genmesh puts there.
    status = builder.schemas[STATUS_SCHEMA]
    status["properties"]["details"]["items"] = {
        "$ref": "#/components/schemas/google.protobuf.Any",
        "description": "genmesh sends `type.googleapis.com/google.rpc.BadRequest` naming the field at fault.",
    }
    status["additionalProperties"] = True
    builder.schemas["google.protobuf.Any"] = _WELL_KNOWN["google.protobuf.Any"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "genmesh REST API",
            "version": version,
            "description": (
                "Every genmesh RPC over REST through the gateway (Envoy's gRPC-JSON transcoder), generated "
                "from the protos. Field names as in the protos (lowerCamel is accepted on input); unknown "
                "fields are refused with 400. Server-streaming routes answer text/event-stream."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/", "description": "the gateway this document was fetched from"}],
        "security": [{"apiKey": []}],
        "tags": [{"name": name, "description": description} for name, description in sorted(tags.items())],
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": API_KEY_HEADER,
                    "description": "A key from the gateway's keys file (`Authorization: Bearer <key>` works too).",
                }
            },
            "schemas": dict(sorted(builder.schemas.items())),
        },
    }
