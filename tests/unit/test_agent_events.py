"""Stream events of a character job: stage events, and terminal events that name the stage and list
what the finished stages stored."""

from __future__ import annotations

import pytest

from genmesh.agent.v1 import agent_pb2
from genmesh.common.v1 import job_pb2
from servers.agent import convert
from servers.agent.types import CharacterSheet, StageDone, StageProgress, StageStarted
from servers.runtime import events
from servers.runtime.queue import Job
from storage.object_store import StoredObject

SHEET = CharacterSheet("Mira", "bio", "calm", "a portrait", "", "she blinks")


def stored(name: str) -> StoredObject:
    return StoredObject("outputs", f"20261130_0000/agt-1/{name}", "http://s3/x", "application/json", 10, "ab")


def job_with(*payloads: object) -> Job:
    job = Job(id="agt-1", method="CreateCharacter", detached=False, work=lambda context: None)
    job.history = [events.Output(payload) for payload in payloads]
    return job


def test_stage_events() -> None:
    job = job_with()
    progress = events.Progress(step=10, total_steps=100, elapsed_seconds=1.0, eta_seconds=9.0)
    started = convert.stream_event(job, events.Output(StageStarted("image", "img-1", "image"), progress))
    assert started.stage_started == agent_pb2.StageStarted(stage=agent_pb2.STAGE_IMAGE, sub_job_id="img-1",
                                                           service="image")  # fmt: skip
    assert started.progress.fraction == pytest.approx(0.1) and started.state == job_pb2.JOB_STATE_RUNNING
    sub = job_pb2.Progress(step=2, total_steps=4, fraction=0.5)
    update = convert.stream_event(job, events.Output(StageProgress("video", "vid-1", sub, "STAGE_DENOISING")))
    assert update.stage_progress.sub_progress.step == 2 and update.stage_progress.sub_stage == "STAGE_DENOISING"
    done = convert.stream_event(job, events.Output(StageDone("text", "txt-1", stored("character.json"), 2.5, SHEET)))
    assert done.stage_result.sheet.name == "Mira" and done.stage_result.artifact.key.endswith("character.json")
    assert done.stage_result.seconds == 2.5


def test_a_failure_names_the_running_stage_and_lists_the_finished_ones() -> None:
    job = job_with(
        StageStarted("text", "txt-1", "text"),
        StageDone("text", "txt-1", stored("character.json"), 1.0, SHEET),
        StageStarted("image", "img-1", "image"),
        StageDone("image", "img-1", stored("portrait.png"), 1.0),
        StageStarted("video", "vid-1", "video"),
    )
    event = convert.stream_event(job, events.Failed("RESOURCE_EXHAUSTED", "the video stage failed: out of memory"))
    error = event.error
    assert (error.code, error.stage, error.sub_job_id) == ("RESOURCE_EXHAUSTED", agent_pb2.STAGE_VIDEO, "vid-1")
    assert [stage.stage for stage in error.completed_stages] == [agent_pb2.STAGE_TEXT, agent_pb2.STAGE_IMAGE]
    assert event.state == job_pb2.JOB_STATE_FAILED
    cancelled = convert.stream_event(job, events.CancelledEvent("cancel requested")).cancelled
    assert cancelled.stage == agent_pb2.STAGE_VIDEO and len(cancelled.completed_stages) == 2


def test_a_sub_job_refused_before_it_started_still_names_its_stage() -> None:
    job = job_with(StageStarted("text", "txt-1", "text"), StageDone("text", "txt-1", stored("c.json"), 1.0, SHEET))
    error = convert.stream_event(job, events.Failed("NOT_FOUND", "the image stage failed: no model"), ("text", "image"))
    assert error.error.stage == agent_pb2.STAGE_IMAGE and error.error.sub_job_id == ""
    finished = job_with(StageDone("text", "txt-1", stored("c.json"), 1.0, SHEET))
    late = convert.stream_event(finished, events.Failed("UNAVAILABLE", "store down"), ("text",)).error
    assert late.stage == agent_pb2.STAGE_UNSPECIFIED and len(late.completed_stages) == 1
    assert len(convert.job_message(job).completed_stages) == 1
