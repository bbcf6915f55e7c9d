"""Text deltas in frames: the one per-token report, merged so the stream carries at most one
message per frame.

Each streamed message costs the same CPU whatever it holds (the server loop's socket write, Envoy,
the client), on the cores llama.cpp keeps busy. So a job's deltas go out in frames: the first
token at once, later ones with the first token that comes at least a frame after the previous
delta, merged (text waits at most a frame plus one token, and a model slower than a frame still
streams every token at once). The text held always goes out before the job's next other report,
and ``flush`` sends it before the job ends.
"""

from __future__ import annotations

import math
import time

from servers.runtime.events import Payload, Preview, Progress, TextDelta, TokenLogprob
from servers.runtime.queue import JobContext

# Text deltas of one job are sent at most this often (the first at once); 0 sends every token.
FRAME_SECONDS = 0.1


class TextFrames:
    """A reporter in front of a job's context that merges its text deltas into frames. Used from the
    job's worker thread only."""

    def __init__(self, context: JobContext, frame_seconds: float = FRAME_SECONDS) -> None:
        self.context = context
        self._frame_seconds = frame_seconds
        self._text: list[str] = []  # held text, how many tokens it holds, and their latest progress
        self._tokens = 0
        self._logprobs: list[TokenLogprob] = []
        self._progress: Progress | None = None
        self._sent_at = -math.inf

    def check_cancelled(self) -> None:
        self.context.check_cancelled()

    def progress(self, step: int, total_steps: int, preview: Preview | None = None) -> None:
        self.flush()
        self.context.progress(step, total_steps, preview)

    def output(
        self, payload: Payload, step: int | None = None, total_steps: int | None = None, preview: Preview | None = None
    ) -> None:
        if not isinstance(payload, TextDelta):
            self.flush()
            self.context.output(payload, step, total_steps, preview)
            return
        self._text.append(payload.text)
        self._tokens += payload.tokens
        self._logprobs.extend(payload.logprobs)
        if step is not None and total_steps is not None:
            self._progress = self.context.make_progress(step, total_steps, preview)
        if time.monotonic() - self._sent_at >= self._frame_seconds:
            self.flush()

    def flush(self) -> None:
        """Send the text held for the next frame now."""
        if not self._tokens:
            return
        text = self._text[0] if len(self._text) == 1 else "".join(self._text)
        delta = TextDelta(text, self._tokens, tuple(self._logprobs))
        progress, self._progress = self._progress, None
        self._text.clear()
        self._logprobs.clear()
        self._tokens = 0
        self._sent_at = time.monotonic()
        self.context.publish_output(delta, progress)
