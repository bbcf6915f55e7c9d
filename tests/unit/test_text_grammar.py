"""The grammar a JSON schema becomes: strings never take raw control characters (JSON forbids them),
and schemas that cannot be enforced are refused naming the field."""

from __future__ import annotations

import pytest
from llama_cpp import LlamaGrammar

from genmesh.errors import InvalidArgument
from servers.text.engine import schema_gbnf

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
}


def test_schema_strings_exclude_raw_control_characters_but_keep_escapes() -> None:
    gbnf = schema_gbnf(SCHEMA)
    char_rules = [line for line in gbnf.splitlines() if line.startswith("char ::=")]
    assert char_rules == [
        r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
    ]
    LlamaGrammar.from_string(gbnf, verbose=False)  # llama.cpp parses it


@pytest.mark.parametrize(
    "schema", [{"type": "string", "enum": []}, {"type": "object", "properties": {"a": {"type": 7}}}]
)
def test_schemas_that_cannot_be_enforced_name_the_field(schema: dict) -> None:
    with pytest.raises(InvalidArgument, match=r"^response_format\.json_schema: ") as error:
        schema_gbnf(schema)
    assert error.value.field == "response_format.json_schema"
