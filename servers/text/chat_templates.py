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
