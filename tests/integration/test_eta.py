"""Honest ETAs: once a fifth of a job is done, the ETA each service reports is within a factor of
two of the time the job really took to finish (the median over its reports from 20% to 80%), for
text, image, video, a character and training, on the CPU models of the session mesh. Each job is
sized to run for seconds, not milliseconds, so that the comparison measures the estimate rather
than the noise of a busy machine."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from genmesh.client import GenmeshClient
from servers.mesh.processes import wait_until

pytestmark = pytest.mark.integration

# A schema whose one string must be long: the model writes until max_tokens, so the job's real end
# is the end the ETA aims at (a job that stops early at its end-of-text token is not an estimate's fault).
LONG_STORY = {
    "type": "object",
    "properties": {"story": {"type": "string", "minLength": 2000}},
    "required": ["story"],
}


@dataclass(frozen=True)
class Point:
    at: float  # time.monotonic() when the event arrived
    fraction: float
    eta: float


def timeline(events: Iterable) -> tuple[list[Point], float]:
    """The progress of every event that carries one, and when the stream ended."""
    points = []
    for event in events:
        progress = getattr(event, "progress", None)
        if progress is not None and event.HasField("progress") and progress.total_steps:
            points.append(Point(time.monotonic(), progress.fraction, progress.eta_seconds))
    return points, time.monotonic()


@pytest.fixture(autouse=True)
def quiet_mesh(client: GenmeshClient) -> None:
    """Earlier tests' detached jobs would share the cores with the one measured: wait until none runs."""
    wait_until(
        lambda: not any(client.list_jobs(state=state).jobs for state in ("running", "queued")),
        timeout=300,
        what="earlier jobs to finish",
    )


def assert_honest(points: list[Point], end: float, what: str) -> None:
    """The median of ETA / real remaining time over the reports from 20% to 80% is within [0.5, 2]:
    the ETA from the fifth of the job on, judged without letting one stalled moment of a shared
    machine (a report that waited for a core) decide."""
    ratios = sorted(point.eta / (end - point.at) for point in points if 0.2 <= point.fraction <= 0.8 and point.eta > 0)
    assert ratios, f"{what}: no progress between 20% and 80% with an ETA: {points}"
    median = ratios[len(ratios) // 2]
    print(f"{what}: ETA / real remaining time from 20% to 80%: median x{median:.2f} of {len(ratios)} reports")
    assert 0.5 <= median <= 2.0, f"{what}: ETA x{median:.2f} of the real remaining time (ratios {ratios})"


def test_text_eta(client: GenmeshClient) -> None:
    events = client.text.stream_chat(
        [{"role": "user", "content": "Tell a long story."}], max_tokens=64, json_schema=LONG_STORY, seed=1
    )
    assert_honest(*timeline(events), "text")


def test_image_eta(client: GenmeshClient) -> None:
    events = client.images.stream_generate("a red dot", width=256, height=256, steps=24, seed=1)
    assert_honest(*timeline(events), "image")


def test_video_eta(client: GenmeshClient) -> None:
    events = client.videos.stream_generate("a red dot", width=128, height=128, num_frames=8, steps=16, seed=1)
    assert_honest(*timeline(events), "video")


def test_character_eta(client: GenmeshClient) -> None:
    options = {"image": {"width": 128, "height": 128}, "video": {"num_frames": 8}}
    # Stage costs are learned from finished stages (stored, so they survive restarts): a first job
    # teaches the agent this machine's pace and how long its sheets run, the second is measured.
    client.agent.create_character("a brave fox", steps=6, seed=1, **options)
    events = client.agent.stream_create_character("a brave fox", steps=6, seed=1, **options)
    assert_honest(*timeline(events), "character")


def test_training_eta(client: GenmeshClient) -> None:
    data = list(client.training.stream_synthetic_data(num_images=32, width=64, height=64, seed=5, dataset_name="eta"))
    prefix = data[-1].result.dataset_prefix
    job = client.training.create_job(layer=62, dataset_prefix=prefix, num_epochs=20, batch_size=4, patch_size=32,
                                     architecture="tiny", seed=1)  # fmt: skip
    assert_honest(*timeline(client.training.watch(job.job_id)), "training")
