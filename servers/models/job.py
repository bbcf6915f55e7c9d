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

    def check_cancelled(self) -> None:
        self.context.check_cancelled()

    def report(self, phase: str, file_name: str, tick: Tick | None = None) -> None:
        progress = None
        if tick is not None:
            done, total = tick.bytes_done // MIB, max(1, -(-tick.bytes_total // MIB)) if tick.bytes_total else 0
            progress = events.Progress(done, total, time.monotonic() - self.started, tick.eta_seconds)
        self.context.publish_output(convert.PullStatus(phase, file_name, tick), progress)


def run_pull(puller: ModelPuller, request: PullRequest, context: JobContext):
    return convert.pull_result(puller.pull(request, JobReporter(context)))
