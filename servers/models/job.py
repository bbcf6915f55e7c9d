"""One PullModel job: the engine's pull on a worker thread, its phases and download ticks turned
into job events (with overall progress in MiB, at the download's own speed and ETA)."""

from __future__ import annotations

import time

from servers.models import convert
from servers.models.download import Tick
from servers.models.engine import ModelPuller, PullRequest
from servers.runtime import events
from servers.runtime.queue import JobContext

MIB = 1024 * 1024


class JobReporter:
    """``engine.PullReporter`` over a job's context."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.started = time.monotonic()
        self.last_tick: Tick | None = None  # verify and install show the bytes the download ended with

    def check_cancelled(self) -> None:
        self.context.check_cancelled()

    def report(self, phase: str, file_name: str, tick: Tick | None = None) -> None:
        progress = None
        if tick is None and self.last_tick is not None:
            tick = Tick(self.last_tick.bytes_done, self.last_tick.bytes_total, 0.0, 0.0, self.last_tick.retries)
        self.last_tick = tick
        if tick is not None:
            done, total = -(-tick.bytes_done // MIB), -(-tick.bytes_total // MIB)  # MiB, rounded up alike
            progress = events.Progress(done, total, time.monotonic() - self.started, tick.eta_seconds)
        self.context.publish_output(convert.PullStatus(phase, file_name, tick), progress)


def run_pull(puller: ModelPuller, request: PullRequest, context: JobContext):
    return convert.pull_result(puller.pull(request, JobReporter(context)))
