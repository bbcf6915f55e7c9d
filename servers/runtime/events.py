"""What a job reports and emits: progress, typed output payloads, lifecycle events, and the one
``Reporter`` protocol engines report through. Nothing here imports grpc, torch or the queue, so
grpc-free engines (diffusion, text, training) depend on this module alone."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Preview:
    data: bytes
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    elapsed_seconds: float
    eta_seconds: float
    preview: Preview | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps > 0 else 0.0


class Payload:
    """Base of everything a job streams as a piece of its result (an ``Output``): the stage changes
    and text deltas below, and each service's own (Training's epochs, the agent's stages)."""

    __slots__ = ()


@dataclass(frozen=True)
class StageChanged(Payload):
    """A job entered a stage, or moved on inside one (``done`` of ``total`` items, e.g. frames).

    ``stage`` is the lower-case name of the service's proto ``Stage`` value without its prefix
    (``"decoding"`` is ``STAGE_DECODING``): ``servers.runtime.convert.stage_value`` maps it by name.
    """

    stage: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log probability and (for a generated token) the likeliest alternatives."""

    token: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class TextDelta(Payload):
    """Generated text, streamed as it is made: ``tokens`` tokens' worth (Text merges deltas into frames),
    with the log probabilities of the tokens it holds when the request asked for them."""

    text: str
    tokens: int = 1
    logprobs: tuple[TokenLogprob, ...] = ()


# Events, in the order a job emits them: Queued+ Started (Output | ProgressEvent)* terminal.
@dataclass(frozen=True)
class Queued:
    queue_position: int


@dataclass(frozen=True)
class Started:
    queued_seconds: float


@dataclass(frozen=True)
class ProgressEvent:
    progress: Progress


@dataclass(frozen=True)
class Output:
    """A piece of the result (or a stage change) streamed as it is made."""

    payload: Payload
    progress: Progress | None = None


@dataclass(frozen=True)
class Succeeded:
    result: Any  # the service's own result message, built by its job


@dataclass(frozen=True)
class Failed:
    code: str
    message: str
    field: str | None = None  # the request field at fault, when there is one (sent as a BadRequest detail)


@dataclass(frozen=True)
class CancelledEvent:
    reason: str


JobEvent = Queued | Started | ProgressEvent | Output | Succeeded | Failed | CancelledEvent
TERMINAL_EVENTS = (Succeeded, Failed, CancelledEvent)

CANCEL_REQUESTED = "cancel requested"
CLIENT_DISCONNECTED = "client disconnected"
SHUTTING_DOWN = "server shutting down"


class Reporter(Protocol):
    """What an engine sees of its job (``servers.runtime.queue.JobContext`` is one): cancellation
    checks between steps, progress, and pieces of the result."""

    def check_cancelled(self) -> None: ...

    def progress(self, step: int, total_steps: int, preview: Preview | None = None) -> None: ...

    def output(
        self, payload: Payload, step: int | None = None, total_steps: int | None = None, preview: Preview | None = None
    ) -> None: ...


class NullReporter:
    """A reporter for work outside a job (warm-up runs, direct calls): no progress, never cancelled."""

    def check_cancelled(self) -> None:
        return None

    def progress(self, step: int, total_steps: int, preview: Preview | None = None) -> None:
        return None

    def output(
        self, payload: Payload, step: int | None = None, total_steps: int | None = None, preview: Preview | None = None
    ) -> None:
        return None


NULL_REPORTER = NullReporter()
