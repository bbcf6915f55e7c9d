"""Chat prompt formatting: the GGUF's own template when it has one, else one by architecture."""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import TemplateError
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from genmesh.errors import InvalidArgument
from servers.text.types import ChatTurn

# Gemma has no system role: the system text opens the first user turn (as Google's template does).
GEMMA = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}{%- set ns.system = ns.system + m.content + '\\n\\n' -%}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + ('model' if m.role == 'assistant' else 'user') + '\\n' }}"
    "{%- if m.role == 'user' and ns.system -%}{{ ns.system }}{%- set ns.system = '' -%}{%- endif -%}"
    "{{ (m.content | trim) + '<end_of_turn>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

CHATML = (
    "{%- for m in messages -%}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# general.architecture prefix -> (template, stop strings). Checked in order; ChatML is the fallback.
BY_ARCHITECTURE: list[tuple[str, str, tuple[str, ...]]] = [
    ("gemma", GEMMA, ("<end_of_turn>",)),
]


class ChatFormatter:
    def __init__(self, metadata: dict[str, str], bos_token: str, eos_token: str) -> None:
        template = metadata.get("tokenizer.chat_template")
        stops: tuple[str, ...] = ()
        if not template:
            architecture = metadata.get("general.architecture", "")
            template, stops = next(
                ((tpl, stop) for prefix, tpl, stop in BY_ARCHITECTURE if architecture.startswith(prefix)),
                (CHATML, ("<|im_end|>",)),
            )
        # The tokenizer adds BOS itself; the template must not add a second one.
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token="")
        self.stops = stops

    def pieces(self, messages: Sequence[ChatTurn]) -> tuple[list[tuple[str, bool]], tuple[str, ...]]:
        """The prompt as (text, is_template) pieces: message contents are marked so the engine
        tokenizes them as plain text, and a "<start_of_turn>" typed by a user stays text instead of
        becoming a control token (no faked turns)."""
        marks = [f"\x00{index}\x00" for index in range(len(messages))]
        prompt, stops = self.prompt([ChatTurn(m.role, mark) for m, mark in zip(messages, marks, strict=True)])
        pieces: list[tuple[str, bool]] = []
        for index, mark in enumerate(marks):
            before, found, prompt = prompt.partition(mark)
            if not found:  # the template dropped or changed this message: fall back to one string
                return [(self.prompt(messages)[0], True)], stops
            pieces += [(before, True), (messages[index].content, False)]
        pieces.append((prompt, True))
        return [(text, special) for text, special in pieces if text], stops

    def prompt(self, messages: Sequence[ChatTurn]) -> tuple[str, tuple[str, ...]]:
        try:
            response = self._formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
        except (TemplateError, ValueError) as exc:  # e.g. "roles must alternate user/assistant"
            raise InvalidArgument(
                f"messages: the model's chat template refused them: {exc}", field="messages"
            ) from None
        stop = response.stop
        extra = (stop,) if isinstance(stop, str) else tuple(stop or ())
        return response.prompt, tuple(stop for stop in dict.fromkeys((*self.stops, *extra)) if stop)
