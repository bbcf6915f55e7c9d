"""What a REST request may hold, read from the descriptor set Envoy transcodes with, for the gateway's strict
JSON check (``deploy/envoy/strict_json.lua``).

Envoy's gRPC-JSON transcoder drops JSON fields the message does not have, so ``{"epochs": 5}`` ran with
the default epochs and the caller never knew. The transcoder has no switch for that; the gateway runs a
small Lua filter before it instead, generated from the same descriptors: for every route its request
message and the message its body becomes, and for every message its fields (JSON and proto names),
their kinds and their oneofs. The filter refuses an unknown field or query parameter (naming it, and
the field meant for a near miss), a value of the wrong JSON type (``"detach": "yes"``), and two
members of one oneof.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pool import DescriptorPool

# Well-known types with their own JSON form: what JSON value each accepts.
_WELL_KNOWN = {
    "google.protobuf.Struct": "object",
    "google.protobuf.Value": "any",
    "google.protobuf.ListValue": "array",
    "google.protobuf.Any": "object",
    "google.protobuf.Timestamp": "string",
    "google.protobuf.Duration": "string",
    "google.protobuf.FieldMask": "string",
    "google.protobuf.Empty": "object",
    "google.protobuf.BoolValue": "bool",
    "google.protobuf.StringValue": "string",
    "google.protobuf.BytesValue": "string",
    **{f"google.protobuf.{name}Value": "number" for name in ("Int32", "Int64", "UInt32", "UInt64", "Float", "Double")},
}
_NUMBERS = {
    FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
}  # fmt: skip
STRICT_JSON_LUA = Path(__file__).resolve().parents[2] / "deploy" / "envoy" / "strict_json.lua"
_TEMPLATE_VARIABLE = re.compile(r"\{([^}=]+)(=[^}]*)?\}")


@dataclass(frozen=True)
class Route:
    """A transcoded route: ``POST /v1/images:generate`` -> GenerateImageRequest."""

    method: str  # "GET", "POST", ...
    pattern: str  # a Lua pattern for the whole path (query string excluded)
    request: str  # full name of the request message (query parameters name its fields)
    body: str  # full name of the message the JSON body becomes; "" without a body
    prefix: str  # the body's path in the request message: "" for body "*", "spec." for body "spec"


def _kind(field: FieldDescriptor) -> str:
    """The JSON value a field takes: bool, number, string, enum, object (a message), or a well-known kind."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _WELL_KNOWN.get(field.message_type.full_name, "message")
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "bool"
    if field.type == FieldDescriptor.TYPE_ENUM:
        return "enum"
    if field.type in _NUMBERS:
        return "number"
    return "string"  # string, bytes (base64)


def _message_schema(message: Descriptor, schemas: dict[str, Any]) -> None:
    if message.full_name in schemas or message.full_name in _WELL_KNOWN:
        return
    fields: dict[str, Any] = {}
    schemas[message.full_name] = {"fields": fields}
    for field in message.fields:
        entry: dict[str, Any] = {"name": field.name, "kind": _kind(field)}
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value = field.message_type.fields_by_name["value"]
                entry["map"] = True
                entry["kind"] = _kind(value)
                if entry["kind"] == "message":
                    entry["message"] = value.message_type.full_name
                    _message_schema(value.message_type, schemas)
            else:
                entry["repeated"] = True
        if entry["kind"] == "message" and "message" not in entry:
            entry["message"] = field.message_type.full_name
            _message_schema(field.message_type, schemas)
        if field.containing_oneof is not None and not _synthetic(field):
            entry["oneof"] = field.containing_oneof.name
        if field.type == FieldDescriptor.TYPE_ENUM:
            entry["values"] = [value.name for value in field.enum_type.values]
        fields[field.name] = entry
        if field.json_name != field.name:
            fields[field.json_name] = entry  # the transcoder takes both spellings


def _synthetic(field: FieldDescriptor) -> bool:
    """proto3 ``optional`` wraps a field in a oneof of its own, which can never clash."""
    return bool(getattr(field, "has_presence", False)) and field.containing_oneof.name == f"_{field.name}"


def lua_path_pattern(template: str) -> str:
    """``/v1/images/jobs/{job_id}:cancel`` -> ``^/v1/images/jobs/[^/]+:cancel$`` (a Lua pattern)."""
    parts = []
    position = 0
    for match in _TEMPLATE_VARIABLE.finditer(template):
        parts.append(_lua_escape(template[position : match.start()]))
        parts.append(".+" if match.group(2) and "**" in match.group(2) else "[^/]+")
        position = match.end()
    parts.append(_lua_escape(template[position:]))
    return "^" + "".join(parts) + "$"


def _lua_escape(text: str) -> str:
    return re.sub(r"([\^$()%.\[\]*+\-?])", r"%\1", text)


@dataclass(frozen=True)
class HttpBinding:
    """One REST route of an RPC (``google.api.http``, its additional bindings included)."""

    service: ServiceDescriptor
    method: MethodDescriptor
    verb: str  # "get", "post", ...
    template: str  # "/v1/images/jobs/{job_id}:cancel"
    body: str  # "*", a field name, or "" without a body


def descriptor_files(descriptor_set: Path | bytes) -> tuple[list[descriptor_pb2.FileDescriptorProto], DescriptorPool]:
    """The files of a descriptor set, and a pool that holds them."""
    data = descriptor_set.read_bytes() if isinstance(descriptor_set, Path) else descriptor_set
    files = list(descriptor_pb2.FileDescriptorSet.FromString(data).file)
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    return files, pool


def http_bindings(files: list[descriptor_pb2.FileDescriptorProto], pool: DescriptorPool) -> Iterator[HttpBinding]:
    """Every REST route the gateway transcodes, in the files' order (custom verbs are not routes)."""
    for file in files:
        for service_proto in file.service:
            service = pool.FindServiceByName(f"{file.package}.{service_proto.name}")
            for method in service.methods:
                rule = method.GetOptions().Extensions[annotations_pb2.http]
                for binding in (rule, *rule.additional_bindings):
                    verb = binding.WhichOneof("pattern")
                    if verb is not None and verb != "custom":
                        yield HttpBinding(service, method, verb, getattr(binding, verb), binding.body)


def request_schema(descriptor_set: Path | bytes) -> dict[str, Any]:
    """``{"routes": [...], "messages": {...}}`` for every transcoded route."""
    routes: list[Route] = []
    schemas: dict[str, Any] = {}
    for binding in http_bindings(*descriptor_files(descriptor_set)):
        request = binding.method.input_type
        _message_schema(request, schemas)
        body, prefix = "", ""
        if binding.body == "*":
            body = request.full_name
        elif binding.body:
            field = request.fields_by_name[binding.body]
            body, prefix = field.message_type.full_name, f"{field.name}."
        pattern = lua_path_pattern(binding.template)
        routes.append(Route(binding.verb.upper(), pattern, request.full_name, body, prefix))
    # The filter takes the first route that matches: the most literal text first, so that
    # /v1/training/jobs/{job_id}:watch wins over /v1/training/jobs/{job_id} for ".../trn-1:watch".
    routes.sort(key=lambda route: -len(route.pattern.replace("[^/]+", "").replace(".+", "")))
    return {"routes": [route.__dict__ for route in routes], "messages": schemas}


def render_lua(descriptor_set: Path | bytes, source: Path = STRICT_JSON_LUA) -> str:
    """The Lua filter's code with the schema inlined (the filter parses it once, at load)."""
    schema = json.dumps(request_schema(descriptor_set), separators=(",", ":"), sort_keys=True)
    # A long-bracket string holds the JSON verbatim; pick a level that cannot occur in it.
    level = "=" * next(n for n in range(1, 10) if f"]{'=' * n}]" not in schema)
    return source.read_text().replace("__SCHEMA_JSON__", f"[{level}[{schema}]{level}]")
