"""A library output's parameters typed again, for people to read.

``Output.parameters`` is a ``google.protobuf.Struct`` holding the result's parameters as proto JSON
writes them (the REST shape, to send back as they are): an int64 seed is a string ("42") and every
number a double (steps 4.0). ``typed_parameters`` gives them back the types of the parameters
message of the RPC that made the output (from the generated descriptors): integer fields as ``int``,
fields the message does not have (text's model and seed) as ``int`` when whole; in the order the
message declares its fields.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INTEGERS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}


def parameters_type(method: str) -> Descriptor | None:
    """The parameters message of an RPC's result ("genmesh.image.v1.ImageService/GenerateImage" ->
    ImageParameters), or None when it has none or the RPC is unknown here."""
    try:
        rpc = descriptor_pool.Default().FindMethodByName(method.replace("/", "."))
    except KeyError:
        return None
    message = rpc.output_type
    if "result" in message.fields_by_name:
        message = message.fields_by_name["result"].message_type or message
    field = message.fields_by_name.get("parameters")
    return field.message_type if field is not None else None


def typed_parameters(method: str, parameters: Message | dict[str, Any]) -> dict[str, Any]:
    """``parameters`` (a Struct, or the dict of one) with the numbers of ``method``'s parameters
    message as numbers: ``{"seed": "42", "steps": 4.0}`` -> ``{"seed": 42, "steps": 4}``."""
    values = json_format.MessageToDict(parameters) if isinstance(parameters, Message) else dict(parameters)
    return _typed(values, parameters_type(method))


def _typed(values: dict[str, Any], message: Descriptor | None) -> dict[str, Any]:
    """In the message's field order (a Struct keeps none); names it lacks first, by name."""
    fields = message.fields_by_name if message is not None else {}
    order = sorted(values, key=lambda name: (name in fields, fields[name].index if name in fields else 0, name))
    return {name: _value(values[name], fields.get(name)) for name in order}


def _value(value: Any, field: FieldDescriptor | None) -> Any:
    if isinstance(value, list):
        return [_value(item, field) for item in value]
    if isinstance(value, dict):
        entry = field.message_type if field is not None else None
        if entry is not None and entry.GetOptions().map_entry:
            return {key: _value(item, entry.fields_by_name["value"]) for key, item in value.items()}
        return _typed(value, entry)
    if field is not None and field.type in _INTEGERS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    if field is None and isinstance(value, float) and value.is_integer():
        return int(value)
    return value
