"""Domain types of the Text service (plain Python; the servicer converts protobuf to and from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from servers.runtime.events import TokenLogprob


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True)
class TextRequest:
    """A prompt (Generate) or a conversation (Chat); exactly one is set."""

    model: str = ""
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    json_output: bool = False
    json_schema: dict[str, Any] | None = None
    keep_alive_seconds: int | None = None  # None: keep the model; 0: unload after the job; -1: keep; N: N s idle
    logprobs: int | None = None  # None: no log probabilities; N: each token's and its N likeliest alternatives

    @property
    def is_chat(self) -> bool:
        return self.prompt is None


@dataclass(frozen=True)
class TextOutcome:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    tokens_per_second: float
    total_seconds: float
    model: str
    seed: int
    logprobs: tuple[TokenLogprob, ...] = ()  # when the request asked for them


@dataclass(frozen=True)
class EmbedRequest:
    inputs: tuple[str, ...]
    model: str = ""
    dimensions: int = 0  # 0: every component
    keep_alive_seconds: int | None = None


@dataclass(frozen=True)
class EmbedOutcome:
    vectors: tuple[tuple[float, ...], ...]  # unit length, one per input
    tokens: tuple[int, ...]  # per input
    model: str
