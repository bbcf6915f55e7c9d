"""GetJob and CancelJob, the same for every service whose jobs run on one queue.

A servicer mixes this in before its generated base class and names its queue and the function
that turns a job into its service's ``Job`` message::

    class ImageServicer(JobRpcs, image_pb2_grpc.ImageServiceServicer):
        job_message = staticmethod(convert.job_message)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from servers.runtime.jobs import Job, JobQueue
from storage.keys import validate_job_id

CANCEL_WAIT_SECONDS = 5.0


class JobRpcs:
    queue: JobQueue
    job_message: Callable[[Job], Any]

    async def GetJob(self, request: Any, context: Any) -> Any:
        """The job (queued, running or finished within the retention time); NOT_FOUND otherwise."""
        return self.job_message(self.queue.get(validate_job_id(request.job_id)))

    async def CancelJob(self, request: Any, context: Any) -> Any:
        """Cancel a queued or running job and return it once it stopped (a running job stops within
        a step; after ``CANCEL_WAIT_SECONDS`` it is returned as it is); a finished one is unchanged."""
        job = self.queue.cancel(validate_job_id(request.job_id))
        if not job.terminal:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_terminal(job), CANCEL_WAIT_SECONDS)
        return self.job_message(job)

    async def _until_terminal(self, job: Job) -> None:
        async for _ in self.queue.events(job):
            pass
