"""The body of a training job, run in the training queue's worker thread (no grpc).

Data from object storage -> Trainer -> after every epoch a checkpoint and the job record are
written (so a restart loses at most the epoch in progress) -> at the end the best weights are
registered as a model and the automatic report is written.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from datetime import UTC, datetime
from typing import Any

import structlog
import torch

from genmesh.errors import Cancelled, GenmeshError
from servers.compute.compile import OFF, CompileOptions
from servers.runtime import events
from servers.runtime.errors import as_genmesh_error
from servers.runtime.events import JobState, StageChanged
from servers.runtime.queue import JobContext
from servers.training import registry
from servers.training.data.pairs import load_pairs
from servers.training.jobs.records import TrainingRecord
from servers.training.jobs.store import JobRecords
from servers.training.model.trainer import TrainConfig, Trainer, split_indices
from servers.training.reports import (
    Environment,
    ModelInfo,
    ReportInput,
    Timings,
    build_report,
    save_report,
)
from servers.training.types import CheckpointSaved, DatasetStats, EpochCompleted, EpochMetrics, EpochProgress, Resumed
from storage.buckets import TRAINING_OUTPUTS
from storage.keys import training_output_prefix
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)


class _EpochReporter:
    """Trainer callbacks -> progress events. Each updates ``record.live`` (the TrainingProgress
    fields) and publishes the job's progress at most every ``interval`` seconds (and at the end of
    every epoch's training and validation), since reading the loss waits for the device; the
    switch to validation is a ``StageChanged("validating")``."""

    def __init__(self, record: TrainingRecord, trainer: Trainer, context: JobContext, interval: float = 1.0) -> None:
        self.record, self.trainer, self.context, self.interval = record, trainer, context, interval
        self._last = -math.inf  # the first step is always reported

    def _due(self, done: int, total: int) -> bool:
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return False
        self._last = now
        return True

    def _publish(self, stage: str, done: int, total: int) -> None:
        trainer = self.trainer
        self.record.live = EpochProgress(stage, trainer.epoch + 1, done, total, trainer.running_loss)
        self.context.progress(trainer.global_step, trainer.total_steps)

    def step(self, _global_step: int, _total_steps: int) -> None:
        done, total = self.trainer.step_in_epoch, self.trainer.steps_per_epoch
        if self._due(done, total):
            self._publish("training", done, total)

    def validation_step(self, done: int, total: int) -> None:
        if done == 0:
            self.record.stage = "validating"
            self.context.output(StageChanged("validating", 0, total))
        if done == 0 or self._due(done, total):
            self._publish("validating", done, total)


@dataclasses.dataclass
class TrainingRunner:
    """Runs training jobs on ``device`` (AMP, threads, compiling and channels-last as configured)."""

    store: ObjectStore
    records: JobRecords
    _: dataclasses.KW_ONLY
    device: str
    amp: bool
    threads: int
    compile: CompileOptions = OFF
    channels_last: bool = False
    # The first epoch this process trains, by job (earlier ones come from the record).
    _first_epoch: dict[str, int] = dataclasses.field(default_factory=dict, init=False, repr=False)

    def first_epoch_this_run(self, job_id: str) -> int | None:
        """The first epoch this process trains for ``job_id`` (earlier ones come from the record)."""
        return self._first_epoch.get(job_id)

    @staticmethod
    def terminal_event(record: TrainingRecord) -> events.JobEvent | None:
        """The terminal event of a job that finished before this process (for Watch replays)."""
        match record.state:
            case JobState.SUCCEEDED:
                return events.Succeeded(record)
            case JobState.FAILED:
                return events.Failed(record.error_code or "INTERNAL", record.error_message)
            case JobState.CANCELLED:
                return events.CancelledEvent(record.cancel_reason or events.CANCEL_REQUESTED)
        return None

    def _stage(self, record: TrainingRecord, context: JobContext, stage: str) -> None:
        record.stage = stage
        context.output(StageChanged(stage))

    def run(self, record: TrainingRecord, context: JobContext) -> TrainingRecord:
        record.state, record.device = JobState.RUNNING, self.device
        record.started_at = record.started_at or time.time()
        if record.interrupted_reason:
            context.output(Resumed(record.resumed_count, record.current_epoch, record.interrupted_reason))
            record.interrupted_reason = ""
        self._first_epoch[record.job_id] = record.current_epoch + 1
        self.records.save(record)
        try:
            self._train(record, context)
        except Cancelled as exc:
            if exc.message == events.SHUTTING_DOWN:  # drained: keep it queued, the next start resumes it
                record.state, record.interrupted_reason = JobState.QUEUED, events.SHUTTING_DOWN
            else:
                record.state, record.cancel_reason, record.ended_at = JobState.CANCELLED, exc.message, time.time()
                self._report_safely(record, "cancelled")
            record.stage, record.live = "", None
            self.records.save(record)
            raise
        except Exception as exc:
            error = as_genmesh_error(exc)
            record.state, record.error_code, record.error_message = JobState.FAILED, error.code, error.message
            record.ended_at, record.stage, record.live = time.time(), "", None
            self._report_safely(record, "failed")
            self.records.save(record)
            if isinstance(exc, GenmeshError):
                raise
            raise error from exc
        return record

    def _report_safely(self, record: TrainingRecord, status: str) -> None:
        """A job that ends without a model still gets a report once it has epochs to show."""
        if not record.history:
            return
        try:
            self._report(record, None, None, status=status)
        except Exception:
            log.exception("report_failed", job_id=record.job_id)

    def _train(self, record: TrainingRecord, context: JobContext) -> None:
        spec = record.spec
        self._stage(record, context, "loading_data")
        pairs = load_pairs(
            self.store,
            spec.dataset_prefix,
            max_pairs=spec.max_pairs,
            min_side=spec.patch_size,
            field_name="spec.dataset_prefix",
            names=record.pair_names or None,
            check_cancelled=context.check_cancelled,
        )
        train_idx, val_idx = split_indices(len(pairs.names), spec.validation_split, spec.seed)
        pairs.stats = dataclasses.replace(pairs.stats, train_pairs=len(train_idx), validation_pairs=len(val_idx))
        record.dataset = pairs.stats
        record.pair_names = list(pairs.names)
        self.records.save_pairs(record)
        self.records.save(record)
        train = [(pairs.degraded[i], pairs.clean[i]) for i in train_idx]
        validation = [(pairs.degraded[i], pairs.clean[i]) for i in val_idx]
        if record.checkpoint_key:
            checkpoint = self.store.get_bytes(TRAINING_OUTPUTS, record.checkpoint_key)
            trainer = Trainer.resume(
                checkpoint, train, validation, epochs=spec.num_epochs, device=self.device, threads=self.threads,
                amp=self.amp, compile=self.compile.enabled, compile_mode=self.compile.mode,
                channels_last=self.channels_last,
            )  # fmt: skip
            # The checkpoint is the truth: a crash between writing it and the record leaves the
            # record one epoch behind.
            record.history = list(trainer.history)
            record.current_epoch = trainer.epoch
            record.best_epoch = trainer.best.epoch if trainer.best else 0
        else:
            config = TrainConfig(
                epochs=spec.num_epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate,
                patch_size=spec.patch_size, seed=spec.seed, architecture=spec.architecture, device=self.device,
                amp=self.amp, threads=self.threads, min_learning_rate=min(1e-6, spec.learning_rate),
                compile=self.compile.enabled, compile_mode=self.compile.mode, channels_last=self.channels_last,
            )  # fmt: skip
            trainer = Trainer(config, train, validation)
        record.device = trainer.device_name
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)
        self._stage(record, context, "training")
        progress = _EpochReporter(record, trainer, context)
        trainer.run(
            on_step=progress.step,
            on_epoch=lambda result: self._epoch_done(record, trainer, context, result),
            check_cancelled=context.check_cancelled,
            on_validation_step=progress.validation_step,
        )
        record.live = None
        self._stage(record, context, "saving")
        if record.model_id:  # registered before a crash: never twice
            info = registry.get_model(self.store, record.model_id)
        else:
            info = self._register(record, trainer)
            record.model_id = info.model_id
            self.records.save(record)
        record.state, record.ended_at, record.stage = JobState.SUCCEEDED, time.time(), ""
        try:
            self._report(record, trainer, info, status="succeeded")
        except Exception:  # the model is registered: a report problem must not fail the job
            log.exception("report_failed", job_id=record.job_id)
        self.records.save(record)

    def _epoch_done(self, record: TrainingRecord, trainer: Trainer, context: JobContext, epoch: EpochMetrics) -> None:
        prefix = training_output_prefix("checkpoints", record.job_id)
        stored = self.store.put_bytes(
            TRAINING_OUTPUTS, prefix + "last.pt", trainer.checkpoint_bytes(), "application/octet-stream"
        )
        if epoch.best:
            self.store.put_bytes(
                TRAINING_OUTPUTS, prefix + "best.pt", trainer.best_model_bytes(), "application/octet-stream"
            )
            record.best_epoch = epoch.epoch
        record.history = [item for item in record.history if item.epoch < epoch.epoch] + [epoch]
        record.current_epoch = epoch.epoch
        record.checkpoint_key, record.checkpoint_sha256 = stored.key, stored.sha256
        record.checkpoint_size = stored.size_bytes
        record.live = None
        self.records.save(record)
        context.output(EpochCompleted(epoch))
        context.output(CheckpointSaved(epoch.epoch, stored, epoch.best))
        if epoch.epoch < record.spec.num_epochs:
            self._stage(record, context, "training")
        log.info("epoch_done", epoch=epoch.epoch, psnr=round(epoch.validation.psnr, 3),
                 baseline_psnr=round(epoch.baseline.psnr, 3), train_loss=round(epoch.train_loss, 5))  # fmt: skip

    def _register(self, record: TrainingRecord, trainer: Trainer) -> registry.RegisteredModelInfo:
        best = record.best
        assert best is not None
        metadata: dict[str, Any] = {
            "job_id": record.job_id,
            "architecture": record.spec.architecture,
            "parameter_count": trainer.parameter_count,
            "dataset_prefix": record.spec.dataset_prefix,
            "best_epoch": best.epoch,
            "metrics": best.validation.to_dict(),
            "baseline": best.baseline.to_dict(),
            "validation_loss": best.validation_loss,
            "spec": record.spec.to_dict(),
        }
        return registry.register_model(
            self.store, layer=record.spec.layer, model_bytes=trainer.best_model_bytes(), metadata=metadata,
            now=datetime.now(UTC),
        )  # fmt: skip

    def _report(
        self,
        record: TrainingRecord,
        trainer: Trainer | None,
        info: registry.RegisteredModelInfo | None,
        *,
        status: str,
    ) -> None:
        previous = registry.previous_model(self.store, record.spec.layer, before_id=info.model_id if info else None)
        device = trainer.device if trainer is not None else torch.device("cpu")
        cuda = device.type == "cuda"
        model = None
        if trainer is not None and info is not None:
            model = ModelInfo(
                architecture=record.spec.architecture,
                parameter_count=trainer.parameter_count,
                size_bytes=info.size_bytes,
                model_id=info.model_id,
                key=info.key,
            )
        report = build_report(
            ReportInput(
                job_id=record.job_id,
                layer=record.spec.layer,
                status=status,
                spec=record.spec.to_dict(),
                history=record.history,
                dataset=record.dataset or DatasetStats(),
                timings=Timings(created=record.created_at, started=record.started_at, ended=record.ended_at),
                description=record.spec.description,
                best_epoch=record.best_epoch or None,
                model=model,
                previous=previous.as_previous() if previous else None,
                environment=Environment(
                    python=platform.python_version(),
                    torch=torch.__version__,
                    device=record.device,
                    device_name=torch.cuda.get_device_name(device) if cuda else (platform.processor() or "cpu"),
                    peak_memory_bytes=torch.cuda.max_memory_allocated(device) if cuda else 0,
                ),
                resumed_count=record.resumed_count,
                resumed_from_job_id=record.resumed_from_job_id,
                error_message=record.error_message,
            )
        )
        save_report(self.store, report)
