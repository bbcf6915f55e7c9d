"""WatchJob of a job known only by its terminal record (found by the REST fuzz run): the Agent's
stream events have their own error and cancellation types, which the common record's must fill in,
and a record is only ever answered by the service whose job it was (records share one bucket); a job's
message never repeats the inline bytes its stream carried."""

from __future__ import annotations

import pytest

from genmesh.agent.v1 import agent_pb2
from genmesh.common.v1 import artifact_pb2, job_pb2
from genmesh.errors import Cancelled, ResourceExhausted
from genmesh.image.v1 import image_pb2
from genmesh.video.v1 import video_pb2
from servers.runtime.job_rpcs import terminal_events, without_inline_data

AGENT = "genmesh.agent.v1.AgentService"


def _record(state: int, **status) -> agent_pb2.Job:
    return agent_pb2.Job(status=job_pb2.JobStatus(job_id="agt-0-0123456789abcdef01234567", state=state, **status))


def test_a_cancelled_agent_job_watched_from_its_record_says_why() -> None:
    recorded = _record(job_pb2.JOB_STATE_CANCELLED, cancelled=job_pb2.Cancelled(reason="cancel requested"))
    events = terminal_events(AGENT, recorded)
    event = next(events)
    assert isinstance(event, agent_pb2.CreateCharacterResponse)
    assert event.cancelled.reason == "cancel requested"
    with pytest.raises(Cancelled):
        next(events)


def test_a_failed_agent_job_watched_from_its_record_names_its_error() -> None:
    error = job_pb2.JobError(code="RESOURCE_EXHAUSTED", message="queue full")
    events = terminal_events(AGENT, _record(job_pb2.JOB_STATE_FAILED, error=error))
    event = next(events)
    assert (event.error.code, event.error.message) == ("RESOURCE_EXHAUSTED", "queue full")
    with pytest.raises(ResourceExhausted):
        next(events)


def test_a_jobs_message_never_carries_the_inline_bytes_its_stream_had() -> None:
    inline = artifact_pb2.Artifact(bucket="outputs", key="d/img-1/image_0.png", size_bytes=3, data=b"png")
    job = image_pb2.Job(result=image_pb2.ImageResult(
        images=[image_pb2.GeneratedImage(index=0, artifact=inline), image_pb2.GeneratedImage(index=1)],
        record=artifact_pb2.Artifact(bucket="outputs", key="jobs/img-1.json"),
    ))  # fmt: skip
    viewed = without_inline_data(job)
    assert [image.artifact.data for image in viewed.result.images] == [b"", b""]
    assert (
        viewed.result.images[0].artifact.key == "d/img-1/image_0.png"
        and viewed.result.images[0].artifact.size_bytes == 3
    )
    assert inline.data == b"png"  # the stream's own result message is another copy
    video = video_pb2.Job(result=video_pb2.VideoResult(video=artifact_pb2.Artifact(key="v.gif", data=b"GIF89a")))
    assert not without_inline_data(video).result.video.data
