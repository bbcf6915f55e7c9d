"""Training's domain types, job records, typed events and their proto conversion (no mesh)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from genmesh.common.v1 import job_pb2
from genmesh.errors import InvalidArgument, NotFound
from genmesh.training.v1 import training_pb2
from servers.runtime import events
from servers.runtime.events import JobState, StageChanged
from servers.runtime.queue import Job
from servers.training.api import convert
from servers.training.jobs.records import TrainingRecord
from servers.training.jobs.runner import _EpochReporter
from servers.training.jobs.store import JobRecords
from servers.training.legacy import stored_epoch
from servers.training.types import (
    CheckpointSaved,
    DatasetStats,
    EpochCompleted,
    EpochMetrics,
    EpochProgress,
    Quality,
    Resumed,
    TrainingSpec,
)
from storage.buckets import OUTPUTS, TRAINING_OUTPUTS
from storage.object_store import StoredObject
from tests.unit.test_training_registry import MemoryStore

SERVICE = "genmesh.training.v1.TrainingService"
EPOCH = EpochMetrics(
    1, 0.1, 0.09, Quality(30.0, 0.9, 0.8), Quality(25.0, 0.7, 0.6), 1e-4, 3.0, 1_700_000_000.0, 8, True
)


def record(**changes) -> TrainingRecord:
    values = {"job_id": "trn-0123456789abcdef", "spec": TrainingSpec(layer=2, num_epochs=3), "state": JobState.RUNNING}
    return TrainingRecord(**{**values, **changes})


def test_epoch_metrics_have_one_shape_and_older_stored_shapes_are_upgraded_where_read():
    assert EpochMetrics.from_dict(EPOCH.to_dict()) == EPOCH
    flat = {"epoch": 1, "train_loss": 0.1, "validation_loss": 0.09, "psnr": 30.0, "ssim": 0.9, "accuracy": 0.8,
            "baseline_psnr": 25.0, "baseline_ssim": 0.7, "baseline_accuracy": 0.6, "learning_rate": 1e-4,
            "epoch_seconds": 3.0, "end_time": 1_700_000_000.0}  # fmt: skip
    with pytest.raises(KeyError):
        EpochMetrics.from_dict(flat)  # one shape: an older one is upgraded by who reads stored data
    assert stored_epoch(flat) == EpochMetrics(**{**EPOCH.__dict__, "global_step": 0, "best": False})
    prefixed = {key: value for key, value in flat.items() if key not in ("psnr", "ssim", "accuracy")}
    prefixed |= {"validation_psnr": 30.0, "validation_ssim": 0.9, "validation_accuracy": 0.8}
    assert stored_epoch(prefixed).validation == EPOCH.validation
    iso = stored_epoch({**EPOCH.to_dict(), "end_time": "2023-11-14T22:13:20+00:00"})
    assert iso.end_time == 1_700_000_000.0
    assert math.isnan(stored_epoch({"epoch": 2}).validation.psnr)
    assert Quality(3.0, 0.5, 0.5) - Quality(1.0, 0.25, 0.5) == Quality(2.0, 0.25, 0.0)


def test_a_training_job_is_stored_as_its_shared_job_record_and_read_back():
    second = EpochMetrics(2, 0.08, 0.07, Quality(29.0, 0.8, 0.7), Quality(25.0, 0.7, 0.6), 1e-4, 3.0, 1.7e9 + 5)
    item = record(
        history=[EPOCH, second], best_epoch=1, current_epoch=2, stage="training", checkpoint_key="c/x/last.pt",
        checkpoint_sha256="ab", checkpoint_size=3, dataset=DatasetStats(pairs_found=4, train_pairs=3), client_id="a",
        created_at=1_700_000_000.25, started_at=1_700_000_001.5, device="cpu", pair_names=["p1", "p2"],
        spec=TrainingSpec(layer=2, num_epochs=3, max_pairs=10, architecture="tiny", seed=7),
        live=EpochProgress("training", 3, 1, 4, 0.1),
    )  # fmt: skip
    store = MemoryStore()
    records = JobRecords(store)
    records.save(item)
    recorded = json.loads(store.get_bytes(OUTPUTS, f"jobs/{item.job_id}.json"))  # where every job's record is
    assert recorded["status"]["client_id"] == "a" and recorded["training_job"]["spec"]["layer"] == 2
    loaded = records.load(item.job_id)
    # What the messages carry comes back; an epoch's global step does not, and pair names are stored apart.
    assert loaded.history == [dataclasses.replace(EPOCH, global_step=0), second]
    assert loaded.live is None and loaded.pair_names == [] and loaded.spec == item.spec
    unchanged = ("state", "best_epoch", "stage", "checkpoint_key", "checkpoint_size", "dataset", "client_id", "device")
    assert all(getattr(loaded, name) == getattr(item, name) for name in unchanged)
    assert (loaded.created_at, loaded.started_at, loaded.ended_at) == (
        pytest.approx(item.created_at),
        pytest.approx(item.started_at),
        None,
    )
    records.save_pairs(item)
    assert records.pairs(item.job_id) == ["p1", "p2"] and records.pairs("trn-0123456789abcdee") == []
    assert [found.job_id for found in records.all()] == [item.job_id]
    with pytest.raises(NotFound):
        records.load("trn-0123456789abcdee")


def test_records_of_the_old_layout_are_rewritten_once_as_shared_records():
    store = MemoryStore()
    old = {**dataclasses.asdict(record(pair_names=["p1"], client_id="a")), "state": "succeeded"}
    old["history"] = [{"epoch": 1, "psnr": 30.0, "baseline_psnr": 25.0, "train_loss": 0.1}]
    old["spec"]["no_longer_known"] = 1
    del old["live"]
    store.put_bytes(TRAINING_OUTPUTS, "jobs/trn-0123456789abcdef.json", json.dumps(old).encode())
    records = JobRecords(store)
    assert records.migrate_legacy() == ["trn-0123456789abcdef"] and records.migrate_legacy() == []
    loaded = records.load("trn-0123456789abcdef")
    assert loaded.state is JobState.SUCCEEDED and loaded.client_id == "a"
    assert loaded.history[0].validation.psnr == 30.0 and loaded.history[0].baseline.psnr == 25.0
    assert records.pairs("trn-0123456789abcdef") == ["p1"]
    assert not store.exists(TRAINING_OUTPUTS, "jobs/trn-0123456789abcdef.json")
    assert record(state=JobState.QUEUED).active and not record(state=JobState.CANCELLED).active


def test_progress_events_carry_the_step_inside_the_epoch():
    item = record(stage="training", current_epoch=1, live=EpochProgress("training", 2, 3, 5, 0.25))
    progress = events.Progress(8, 15, 2.0, 1.0)
    event = convert.watch_event(item, None, events.ProgressEvent(progress), False, None)
    update = event.progress_update
    assert update.stage == training_pb2.STAGE_TRAINING and (update.epoch, update.total_epochs) == (2, 3)
    assert (update.step, update.steps_per_epoch, update.loss) == (3, 5, 0.25)
    assert event.progress.step == 8 and event.state == job_pb2.JOB_STATE_RUNNING and not event.replayed


def test_validation_is_a_stage_with_its_own_steps():
    item = record(stage="validating", live=EpochProgress("validating", 1, 0, 4, 0.2))
    event = convert.watch_event(item, None, events.Output(StageChanged("validating", 0, 4)), False, None)
    assert event.progress_update.stage == training_pb2.STAGE_VALIDATING
    assert (event.progress_update.step, event.progress_update.steps_per_epoch) == (0, 4)
    stage = convert.watch_event(record(), None, events.Output(StageChanged("saving")), True, None)
    assert stage.progress_update.stage == training_pb2.STAGE_SAVING and stage.progress_update.step == 0


def test_typed_outputs_become_their_events():
    item = record()
    done = convert.watch_event(item, None, events.Output(EpochCompleted(EPOCH)), True, None)
    assert done.epoch_completed.validation.psnr == 30.0 and done.replayed
    assert done.event_time.seconds == 1_700_000_000
    stored = StoredObject("training-outputs", "checkpoints/x/last.pt", "", "application/octet-stream", 3, "ab")
    saved = convert.watch_event(item, None, events.Output(CheckpointSaved(1, stored, True)), False, None)
    assert saved.checkpoint_saved.best and saved.checkpoint_saved.checkpoint.key == "checkpoints/x/last.pt"
    resumed = convert.watch_event(item, None, events.Output(Resumed(2, 1, "server restarted")), False, None)
    assert (resumed.resumed.resumed_count, resumed.resumed.from_epoch) == (2, 1)
    failed = convert.watch_event(record(state=JobState.FAILED), None, events.Failed("INTERNAL", "x"), True, None)
    assert failed.state == job_pb2.JOB_STATE_FAILED and failed.error.message == "x"


def test_task_events_map_stages_by_name():
    job = Job(id="tsk-1", method="RestoreImage", detached=False, work=lambda context: None)
    event = convert.task_event(
        training_pb2.RestoreImageResponse, "restoring", job, events.Output(StageChanged("saving"))
    )
    assert event.progress_update.stage == training_pb2.STAGE_SAVING
    progress = events.ProgressEvent(events.Progress(1, 4, 0.1, 0.3))
    event = convert.task_event(training_pb2.RestoreImageResponse, "restoring", job, progress)
    assert event.progress_update.stage == training_pb2.STAGE_RESTORING and event.progress.total_steps == 4


def test_architectures_map_by_name():
    assert convert.architecture_name(training_pb2.ARCHITECTURE_SMALL) == "small"
    assert convert.architecture_name(training_pb2.ARCHITECTURE_UNSPECIFIED) == "base"
    assert convert.architecture_value("tiny") == training_pb2.ARCHITECTURE_TINY
    assert convert.architecture_value("") == training_pb2.ARCHITECTURE_UNSPECIFIED
    with pytest.raises(InvalidArgument):
        convert.architecture_name(99)
    with pytest.raises(InvalidArgument) as caught:
        TrainingSpec(layer=1, architecture="huge").validate()
    assert caught.value.field == "architecture"


def test_one_pagination_scheme():
    items = list(range(5))
    assert convert.paginate(items, 2, "", default_size=50) == ([0, 1], "2")
    assert convert.paginate(items, 2, "2", default_size=50) == ([2, 3], "4")
    assert convert.paginate(items, 2, "4", default_size=50) == ([4], "")
    assert convert.paginate(items, 0, "", default_size=3) == ([0, 1, 2], "3")
    for size, token, field in ((-1, "", "page_size"), (1001, "", "page_size"), (2, "x", "page_token"),
                               (2, "\u00b2", "page_token"), (2, "9" * 10, "page_token")):  # fmt: skip
        with pytest.raises(InvalidArgument) as caught:
            convert.paginate(items, size, token, default_size=50)
        assert caught.value.field == field


class FakeTrainer:
    epoch, step_in_epoch, steps_per_epoch, global_step, total_steps, running_loss = 0, 0, 4, 0, 12, 0.5


class FakeContext:
    def __init__(self) -> None:
        self.outputs: list = []
        self.progress_calls: list[tuple[int, int]] = []

    def output(self, payload) -> None:
        self.outputs.append(payload)

    def progress(self, step: int, total: int) -> None:
        self.progress_calls.append((step, total))


def test_the_runner_reports_steps_at_most_once_an_interval_and_validation_as_a_stage():
    item, trainer, context = record(stage="training"), FakeTrainer(), FakeContext()
    reporter = _EpochReporter(item, trainer, context, interval=3600.0)
    for step in range(1, 5):
        trainer.step_in_epoch = trainer.global_step = step
        reporter.step(step, 12)
    assert context.progress_calls == [(1, 12), (4, 12)]  # the first, then the epoch's last step
    assert item.live == EpochProgress("training", 1, 4, 4, 0.5)
    reporter.validation_step(0, 2)
    assert context.outputs == [StageChanged("validating", 0, 2)] and item.stage == "validating"
    reporter.validation_step(1, 2)
    reporter.validation_step(2, 2)
    assert item.live == EpochProgress("validating", 1, 2, 2, 0.5) and len(context.progress_calls) == 4


def test_the_default_architecture_follows_the_device():
    from servers.training.types import default_architecture

    assert default_architecture("cpu") == "small" and default_architecture("cuda:0") == "base"
    spec = convert.training_spec(training_pb2.TrainingJobSpec(layer=2), default_architecture("cpu"))
    assert spec.architecture == "small"
    assert convert.spec_message(spec).architecture == training_pb2.ARCHITECTURE_SMALL  # reported in the job's spec
    chosen = convert.training_spec(training_pb2.TrainingJobSpec(layer=2, architecture=training_pb2.ARCHITECTURE_TINY))
    assert chosen.architecture == "tiny"


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        (training_pb2.TrainingJobSpec(), "spec.layer", "spec.layer: required"),
        (training_pb2.TrainingJobSpec(layer=100), "spec.layer", "spec.layer must be between 1 and 99 (got 100)"),
        (training_pb2.TrainingJobSpec(layer=1, num_epochs=0), "spec.num_epochs", "spec.num_epochs"),
        (training_pb2.TrainingJobSpec(layer=1, validation_split=0.9), "spec.validation_split", "(got 0.9)"),
    ],
)
def test_spec_errors_name_the_field_by_its_api_path(spec, field, message) -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert.training_spec(spec)
    assert caught.value.field == field and message in caught.value.message, caught.value.message


class _Runner:
    """The one thing TrainingManager.watch asks its runner here: no epoch ran in this process yet."""

    def first_epoch_this_run(self, job_id: str) -> None:
        return None


async def test_replayed_events_keep_the_time_they_happened() -> None:
    from servers.runtime.queue import JobQueue
    from servers.training.jobs.manager import Replayed, TrainingManager

    queue = JobQueue(name="training", id_prefix="trn", devices=["cpu"], max_queued=4)
    queue.start()
    manager = TrainingManager(queue, records=None, runner=_Runner())  # type: ignore[arg-type]
    job = queue.submit(lambda context: 1, method="CreateTrainingJob")
    item = record(job_id=job.id, state=JobState.SUCCEEDED)
    manager._live[job.id] = item
    [event async for event in queue.events(job)]  # the job ran and ended: a later watch replays it all
    watched = [entry async for entry in manager.watch(job.id)]
    assert all(isinstance(entry, Replayed) for entry in watched)
    assert [entry.time for entry in watched] == job.history_times and len(watched) == len(job.history) >= 3
    queued = convert.watch_event(item, job, watched[0].event, True, None, watched[0].time)
    assert queued.WhichOneof("event") == "queued" and queued.replayed
    assert abs(queued.event_time.ToMilliseconds() - job.history_times[0] * 1000) <= 1
    live = convert.watch_event(item, job, watched[0].event, False, None)
    assert live.event_time.ToMilliseconds() >= queued.event_time.ToMilliseconds()  # a live event: now
    await queue.drain(1)


async def test_get_job_answers_a_training_job_from_its_record_as_it_answers_a_task() -> None:
    """A training job no process holds (its replica restarted, or another has it) is answered by
    the shared GetJob from its record, with the owner check every job gets."""
    from servers.runtime import caller
    from servers.runtime.queue import JobQueue
    from servers.training.api.servicer import TrainingServicer
    from servers.training.jobs.manager import TrainingManager

    store = MemoryStore()
    queue = JobQueue(name="training", id_prefix="trn", devices=["cpu"], max_queued=1, service=SERVICE)
    tasks = JobQueue(name="training-tasks", id_prefix="tsk", devices=["cpu"], max_queued=1, service=SERVICE)
    manager = TrainingManager(queue, JobRecords(store), runner=_Runner())  # type: ignore[arg-type]
    servicer = TrainingServicer(manager, tasks, models=None, store=store)  # type: ignore[arg-type]
    item = record(
        state=JobState.SUCCEEDED, client_id="a", model_id="layer_2-20261122_143518", history=[EPOCH], best_epoch=1
    )
    manager.records.save(item)
    request = training_pb2.GetJobRequest(job_id=item.job_id)
    caller.bind(caller.Caller("a", admin=False))
    job = await servicer.GetJob(request, None)
    assert job.status.state == job_pb2.JOB_STATE_SUCCEEDED and job.status.method.endswith("/CreateTrainingJob")
    assert job.training_job.model_id == item.model_id and job.training_job.best_metrics.epoch == 1
    caller.bind(caller.Caller("b", admin=False))
    with pytest.raises(NotFound):
        await servicer.GetJob(request, None)
    caller.bind(caller.OPERATOR)
