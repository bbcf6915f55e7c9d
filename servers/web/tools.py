"""Tool calls for any model, as llama.cpp's server does for ``tool_choice: required``: the tools are
described in a system message and the answer is constrained by a JSON schema (genmesh's
``response_format``, enforced by a llama.cpp grammar) to either ``{"tool_calls": [{"name",
"arguments"}]}`` or ``{"content": "..."}``; the result is turned back into OpenAI's ``tool_calls``.
Earlier tool calls and results in the conversation are written into the messages as text, so the
Text service keeps its three roles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from servers.web.errors import invalid
from servers.web.fields import check

CONTENT = {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"]}


@dataclass(frozen=True)
class Tools:
    """The functions a chat may call and whether it must call one (and which)."""

    functions: dict[str, dict]  # name -> {"description", "parameters"}
    required: bool  # the answer must be tool calls
    only: str | None = None  # tool_choice named this function
    parallel: bool = True  # more than one call in an answer (OpenAI's parallel_tool_calls)

    def schema(self) -> dict:
        names = [self.only] if self.only else list(self.functions)
        limit = {} if self.parallel else {"maxItems": 1}
        call = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "name": {"const": name},
                        "arguments": self.functions[name].get("parameters") or {"type": "object"},
                    },
                    "required": ["name", "arguments"],
                }
                for name in names
            ]
        }
        calls = {
            "type": "object",
            "properties": {"tool_calls": {"type": "array", "items": call, "minItems": 1, **limit}},
            "required": ["tool_calls"],
        }
        return calls if self.required else {"anyOf": [calls, CONTENT]}

    def instructions(self) -> str:
        listed = "\n".join(
            f"- {name}: {spec.get('description', '')} Arguments (JSON schema): "
            f"{json.dumps(spec.get('parameters') or {'type': 'object'})}"
            for name, spec in self.functions.items()
        )
        answer = 'answer with {"tool_calls": [{"name": ..., "arguments": {...}}]}'
        if not self.required:
            answer += ' to call functions, or {"content": "..."} to reply in text'
        return f"You can call these functions:\n{listed}\nAlways {answer}."


def parse_tools(tools: Any, tool_choice: Any, parallel: bool = True) -> Tools | None:
    """``None`` when the chat has no tools or ``tool_choice`` is ``none``."""
    if tools is None or tool_choice == "none":
        return None
    functions: dict[str, dict] = {}
    for index, tool in enumerate(check(tools, "array", "tools")):
        tool = check(tool, "object", f"tools[{index}]")
        if tool.get("type") != "function":
            raise invalid(f"tools[{index}].type", f"tools[{index}].type: only function tools are supported")
        function = check(tool.get("function"), "object", f"tools[{index}].function")
        name = check(function.get("name"), "string", f"tools[{index}].function.name")
        if function.get("parameters") is not None:
            check(function["parameters"], "object", f"tools[{index}].function.parameters")
        functions[name] = function
    if not functions:
        return None
    if tool_choice in (None, "auto"):
        return Tools(functions, required=False, parallel=parallel)
    if tool_choice == "required":
        return Tools(functions, required=True, parallel=parallel)
    choice = check(tool_choice, "object", "tool_choice")
    name = (choice.get("function") or {}).get("name")
    if name not in functions:
        raise invalid("tool_choice", f"tool_choice: names no function in tools (got {name!r})")
    return Tools(functions, required=True, only=name, parallel=parallel)


def message_text(message: dict, index: int) -> tuple[str, str] | None:
    """(role, content) for a tool result or an assistant's earlier tool calls; None for other messages."""
    if message.get("role") == "tool":
        call = message.get("tool_call_id") or message.get("name") or "a tool call"
        content = message.get("content")
        content = content if isinstance(content, str) else json.dumps(content)
        return "user", f"Result of {call}: {content}"
    calls = message.get("tool_calls")
    if message.get("role") == "assistant" and calls:
        calls = check(calls, "array", f"messages[{index}].tool_calls")
        written = []
        for position, call in enumerate(calls):
            function = check(call, "object", f"messages[{index}].tool_calls[{position}]").get("function") or {}
            arguments = function.get("arguments") or "{}"
            try:
                arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
            except ValueError:
                raise invalid(f"messages[{index}].tool_calls[{position}].function.arguments", "not JSON") from None
            written.append({"name": function.get("name"), "arguments": arguments, "id": call.get("id")})
        return "assistant", json.dumps({"tool_calls": written})
    return None


def answer(text: str, job_id: str) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) from the constrained answer; an answer cut short by ``max_tokens`` is not
    JSON and comes back as text (with ``finish_reason: length``)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text, []
    if "tool_calls" in value:
        calls = [
            {
                "id": f"call_{job_id}_{index}",
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])},
            }
            for index, call in enumerate(value["tool_calls"])
        ]
        return None, calls
    return value["content"], []
