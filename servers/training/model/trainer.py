"""Training a Restormer on (degraded, clean) image pairs: the model lifecycle of one job.

``Trainer(config, train_pairs, val_pairs)`` owns the model, an AdamW optimizer, a cosine learning
rate schedule over every optimizer step of the job, and the job's RNG (a ``torch.Generator``
seeded with ``config.seed``: the only randomness after the initial weights; the network has no
dropout). ``run`` loops over the remaining epochs:

1. train: each epoch shuffles the training pairs and takes ``ceil(pairs / batch_size)`` optimizer
   steps of exactly ``batch_size`` random ``patch_size`` crops (every pair at least once; extra
   draws fill the last batch), each flipped / transposed at random; L1 loss;
2. validate: the whole validation images through the model, metrics of its clamped output
   against the clean images, and of the degraded images themselves (the baseline);
3. keep a copy of the weights of the epoch with the highest validation PSNR (these are what get
   registered), and call ``on_epoch`` (where the caller saves a checkpoint).

``state_dict`` / ``save_checkpoint`` between epochs capture everything; ``Trainer.resume`` after
epoch k continues exactly as an uninterrupted run would (bit-identical on the CPU; on a GPU, as
deterministic as its kernels). Cancellation: ``check_cancelled()`` runs before every optimizer step
and every validation image, and raises ``genmesh.errors.Cancelled``.

Opt-in speed (``TrainConfig.compile`` / ``channels_last``): the training step runs through
``torch.compile`` of the model (validation stays eager: its whole images vary in size), weights and
batches in channels-last. Checkpoints always hold the eager module's ``state_dict`` (no
``_orig_mod.`` keys), so they load into an eager model. bf16 autocast (``amp``) and fused AdamW are
used on GPUs that have them.

Why this module is long: ``Trainer`` is one stateful object whose training loop, validation,
``state_dict``/``load_state_dict`` and best-weights bookkeeping must agree on every piece of state
for a resume to be exact, so they stay together. What is shared lives elsewhere: the metrics
(``EpochMetrics``, ``Quality``) and the recipe's ranges (``check_recipe``, also the API's spec
validation) in ``servers.training.types``, out-of-memory detection in ``servers.compute.memory``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
import torch
import torch.nn.functional as F

from genmesh.errors import FailedPrecondition, GenmeshError, Internal, InvalidArgument, ResourceExhausted
from servers.compute.compile import CompileOptions, compiled, short_error
from servers.compute.devices import configure_threads, device_label, select_device
from servers.compute.memory import free_device_memory, is_out_of_memory
from servers.training.legacy import stored_epoch
from servers.training.types import EpochMetrics, Quality, check_recipe

from . import checkpoint as files
from .metrics import mean_quality, quality_per_image
from .restormer import ARCHITECTURES, architecture_config, build_model, count_parameters
from .tiling import restore_image, validate_tiling

log = structlog.get_logger(__name__)

Pair = tuple[torch.Tensor, torch.Tensor]  # (degraded, clean), each (3, H, W) float in [0, 1]
StepCallback = Callable[[int, int], None]
CancelCheck = Callable[[], None]


class TrainingDiverged(Internal):
    """The loss became NaN or infinite (usually a learning rate too high for the model)."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and placement of one training job. Ranges follow ``TrainingJobSpec``.

    ``device``: "auto", "cpu", "cuda", "cuda:N" (ROCm GPUs are "cuda" too). ``amp``: autocast in
    bfloat16 (fp16 with loss scaling where bf16 is unsupported) on a GPU; ignored on the CPU.
    ``threads``: torch's CPU thread count (None leaves it as set). ``min_learning_rate``: where the
    cosine schedule ends. ``grad_clip_norm``: clip the gradients' global norm (0 = off).
    ``validation_tile_size``: restore validation images in tiles of this side (0 = whole images).
    ``compile``: run the training step through ``torch.compile`` (``compile_mode``); it falls back to
    eager with a warning when the first compiled step fails. ``channels_last``: weights and batches
    in channels-last memory format (faster convolutions on most GPUs). Both change results only
    within floating-point rounding.
    """

    epochs: int = 10
    batch_size: int = 4
    learning_rate: float = 3e-4
    patch_size: int = 128
    seed: int = 0
    architecture: str = "base"
    device: str = "auto"
    amp: bool = False
    threads: int | None = None
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    min_learning_rate: float = 1e-6
    grad_clip_norm: float = 0.0
    validation_tile_size: int = 0
    validation_tile_overlap: int = 32
    compile: bool = False
    compile_mode: str = "default"
    channels_last: bool = False

    def __post_init__(self) -> None:
        check_recipe(
            epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
            patch_size=self.patch_size, seed=self.seed, architecture=self.architecture, epochs_field="epochs",
        )  # fmt: skip
        _require(self.threads is None or self.threads >= 1, "threads", f"must be at least 1 (got {self.threads})")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0 (got {self.weight_decay})")
        _require(
            0 <= self.min_learning_rate <= self.learning_rate,
            "min_learning_rate",
            f"must be between 0 and learning_rate (got {self.min_learning_rate})",
        )
        _require(self.grad_clip_norm >= 0, "grad_clip_norm", f"must be >= 0 (got {self.grad_clip_norm})")
        validate_tiling(self.validation_tile_size, self.validation_tile_overlap)
        CompileOptions(self.compile, self.compile_mode)  # InvalidArgument naming compile_mode

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> TrainConfig:
        values = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


# Fields that a resumed job may change; every other one must equal the checkpoint's.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "threads", "amp", "compile", "compile_mode", "channels_last"})


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise InvalidArgument(f"{field} {message}", field=field)


def split_indices(count: int, validation_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train / validation split of ``count`` pairs: ``round(count * split)`` (at
    least one, and at least one left for training) drawn at random with ``seed``. Sorted lists."""
    _require(count >= 2, "pairs", f"need at least 2 pairs to split (got {count})")
    _require(0 < validation_split < 1, "validation_split", f"must be in (0, 1) (got {validation_split})")
    n_val = min(max(1, round(count * validation_split)), count - 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def _check_pairs(pairs: Sequence[Pair], field: str, min_side: int) -> list[Pair]:
    _require(len(pairs) >= 1, field, "needs at least one pair")
    checked = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise InvalidArgument(f"{field}[{i}] is not a (degraded, clean) pair", field=field)
        degraded, clean = pair
        if degraded.ndim != 3 or degraded.shape[0] != 3 or degraded.shape != clean.shape:
            raise InvalidArgument(
                f"{field}[{i}]: expected two (3, H, W) tensors of one shape, got "
                f"{tuple(degraded.shape)} and {tuple(clean.shape)}",
                field=field,
            )
        if min(degraded.shape[-2:]) < min_side:
            raise InvalidArgument(
                f"{field}[{i}]: {degraded.shape[-1]}x{degraded.shape[-2]} is smaller than the {min_side}-pixel patch",
                field=field,
            )
        checked.append((degraded.detach().float().cpu().contiguous(), clean.detach().float().cpu().contiguous()))
    return checked


class Trainer:
    """One training job's model lifecycle; see the module docstring. Not thread-safe: call
    ``run``, ``state_dict`` and the other methods from one thread."""

    def __init__(self, config: TrainConfig, train_pairs: Sequence[Pair], val_pairs: Sequence[Pair]) -> None:
        self.config = config
        self.device = select_device(config.device)
        if config.threads:
            configure_threads(config.threads)
        self.train_pairs = _check_pairs(train_pairs, "train_pairs", config.patch_size)
        self.val_pairs = _check_pairs(val_pairs, "val_pairs", 1)
        self.model_config = architecture_config(config.architecture)
        self.steps_per_epoch = math.ceil(len(self.train_pairs) / config.batch_size)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.model = build_model(self.model_config).to(self.device)
        self.parameter_count = count_parameters(self.model)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # The training step's module: a compiled wrapper sharing self.model's parameters, or the
        # model itself. self.model stays eager, for validation and for state_dict's plain keys.
        self._step_module: torch.nn.Module = self.model
        self._step_checked = not config.compile  # has a compiled step run once?
        if config.compile:
            self._step_module = compiled(self.model, CompileOptions(True, config.compile_mode))
        cuda = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.learning_rate,
            betas=config.betas,
            weight_decay=config.weight_decay,
            fused=cuda or None,
        )
        # A closure (not a bound method), so the scheduler's state_dict stays plain data.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: self._lr_factor(step))
        self.amp_dtype: torch.dtype | None = None
        if config.amp and cuda:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(config.seed)

        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps completed over the job
        self.step_in_epoch = 0  # optimizer steps completed in the epoch in progress
        self.history: list[EpochMetrics] = []
        self.best: EpochMetrics | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.baseline: Quality | None = None
        self._loss_sum = torch.zeros((), device=self.device)
        self._in_epoch = False

    # --- schedule and progress --------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole job (``epochs * steps_per_epoch``)."""
        return self.config.epochs * self.steps_per_epoch

    @property
    def device_name(self) -> str:
        return device_label(self.device)

    @property
    def learning_rate(self) -> float:
        """The learning rate the next optimizer step uses."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def running_loss(self) -> float:
        """Mean training loss of the epoch in progress so far (0 before its first step). Reading
        it waits for the device, so read it when reporting (e.g. once a second), not every step."""
        return float(self._loss_sum) / self.step_in_epoch if self.step_in_epoch else 0.0

    def _lr_factor(self, step: int) -> float:
        floor = self.config.min_learning_rate / self.config.learning_rate
        progress = min(step / max(self.total_steps, 1), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # --- the loop ---------------------------------------------------------------------------

    def run(
        self,
        on_step: StepCallback | None = None,
        on_epoch: Callable[[EpochMetrics], None] | None = None,
        check_cancelled: CancelCheck | None = None,
        on_validation_step: StepCallback | None = None,
    ) -> EpochMetrics | None:
        """Train the remaining epochs. ``on_step(global_step, total_steps)`` after every optimizer
        step (``step_in_epoch``, ``steps_per_epoch`` and ``running_loss`` give the in-epoch view);
        ``on_validation_step(done, total)`` when validation starts (done 0) and after every
        validation image; ``on_epoch(result)`` after each epoch, when ``state_dict`` /
        ``save_checkpoint`` capture it; ``check_cancelled``
        before every step and validation image. Returns the best epoch so far. Raises
        ``ResourceExhausted`` when the device runs out of memory, ``TrainingDiverged`` when the
        loss becomes NaN or infinite."""
        try:
            while self.epoch < self.config.epochs:
                started = time.perf_counter()
                train_loss = self._train_epoch(on_step, check_cancelled)
                result = self._finish_epoch(started, train_loss, check_cancelled, on_validation_step)
                if on_epoch:
                    on_epoch(result)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_device_memory(self.device)
            raise ResourceExhausted(
                f"out of device memory training {self.config.architecture} with batch_size "
                f"{self.config.batch_size} and patch_size {self.config.patch_size} on {self.device_name}: "
                "lower batch_size or patch_size, or use a smaller architecture"
            ) from None
        finally:
            self._in_epoch = False
        return self.best

    def _epoch_plan(self) -> torch.Tensor:
        """(steps_per_epoch, batch_size) pair indices: shuffled passes over the pairs, enough to
        fill every batch (each pair at least once per epoch)."""
        needed = self.steps_per_epoch * self.config.batch_size
        n = len(self.train_pairs)
        order = torch.cat([torch.randperm(n, generator=self.generator) for _ in range(math.ceil(needed / n))])
        return order[:needed].view(self.steps_per_epoch, self.config.batch_size)

    def _batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops of the pairs at ``indices``, each with one of the 8 flips/transposes."""
        p = self.config.patch_size
        draws = torch.randint(0, 2**31 - 1, (len(indices), 3), generator=self.generator).tolist()
        degraded, clean = [], []
        for index, (r_top, r_left, r_aug) in zip(indices.tolist(), draws, strict=True):
            d, c = self.train_pairs[index]
            top = r_top % (d.shape[-2] - p + 1)
            left = r_left % (d.shape[-1] - p + 1)
            d, c = d[:, top : top + p, left : left + p], c[:, top : top + p, left : left + p]
            aug = r_aug % 8
            if aug & 1:
                d, c = d.flip(-1), c.flip(-1)
            if aug & 2:
                d, c = d.flip(-2), c.flip(-2)
            if aug & 4:
                d, c = d.transpose(-1, -2), c.transpose(-1, -2)
            degraded.append(d)
            clean.append(c)
        return (
            torch.stack(degraded).to(self.device, non_blocking=True),
            torch.stack(clean).to(self.device, non_blocking=True),
        )

    def _optimize(self, degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            degraded = degraded.contiguous(memory_format=torch.channels_last)
        if self._step_checked:
            return self._step(degraded, clean)
        try:  # the first compiled step compiles the forward and backward graphs
            loss = self._step(degraded, clean)
        except Exception as exc:
            if is_out_of_memory(exc) or isinstance(exc, GenmeshError):
                raise
            # Nothing was applied yet (no optimizer or scheduler step): the step is redone eagerly.
            self.optimizer.zero_grad(set_to_none=True)
            self._step_module = self.model
            log.warning("compile_failed_running_eager", what="training step", error=short_error(exc))
            loss = self._step(degraded, clean)
        self._step_checked = True
        return loss

    def _step(self, degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            restored = self._step_module(degraded)
        loss = F.l1_loss(restored.float(), clean)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def _train_epoch(self, on_step: StepCallback | None, check_cancelled: CancelCheck | None) -> float:
        self._in_epoch = True
        self.model.train()
        self.step_in_epoch = 0
        self._loss_sum = torch.zeros((), device=self.device)
        for indices in self._epoch_plan():
            if check_cancelled:
                check_cancelled()
            loss = self._optimize(*self._batch(indices))
            self._loss_sum += loss
            self.step_in_epoch += 1
            self.global_step += 1
            if on_step:
                on_step(self.global_step, self.total_steps)
        train_loss = self.running_loss
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"training diverged in epoch {self.epoch + 1}: the loss is {train_loss}; "
                f"lower learning_rate (now {self.config.learning_rate:g})"
            )
        return train_loss

    def validate(
        self, check_cancelled: CancelCheck | None = None, on_validation_step: StepCallback | None = None
    ) -> tuple[float, Quality, Quality]:
        """(mean L1 loss, model metrics, baseline metrics) over the validation pairs, each the
        mean of per-image values; the model's outputs are clamped to [0, 1] before both."""
        self.model.eval()
        losses: list[float] = []
        restored_q: list[Quality] = []
        baseline_q: list[Quality] = []
        tile = self.config.validation_tile_size
        total = len(self.val_pairs)
        if on_validation_step:
            on_validation_step(0, total)  # validation starts
        with torch.inference_mode():
            for i, (degraded, clean) in enumerate(self.val_pairs):
                if check_cancelled:
                    check_cancelled()
                target = clean.unsqueeze(0).to(self.device)
                if tile:
                    out = restore_image(
                        self.model, degraded, tile, self.config.validation_tile_overlap, amp=bool(self.amp_dtype)
                    )
                    out = out.unsqueeze(0).to(self.device)
                else:
                    with self._autocast():
                        out = self.model(degraded.unsqueeze(0).to(self.device))
                    out = out.float().clamp_(0.0, 1.0)
                losses.append(float(F.l1_loss(out, target)))
                restored_q.extend(quality_per_image(out, target))
                if self.baseline is None:
                    baseline_q.extend(quality_per_image(degraded.unsqueeze(0).to(self.device), target))
                if on_validation_step:
                    on_validation_step(i + 1, total)
        if self.baseline is None:
            self.baseline = mean_quality(baseline_q)
        loss = sum(losses) / total
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training diverged: the validation loss is {loss}; lower learning_rate")
        return loss, mean_quality(restored_q), self.baseline

    def _finish_epoch(
        self,
        started: float,
        train_loss: float,
        check_cancelled: CancelCheck | None,
        on_validation_step: StepCallback | None,
    ) -> EpochMetrics:
        validation_loss, validation, baseline = self.validate(check_cancelled, on_validation_step)
        is_best = self.best is None or validation.psnr > self.best.validation.psnr
        result = EpochMetrics(
            epoch=self.epoch + 1,
            train_loss=train_loss,
            validation_loss=validation_loss,
            validation=validation,
            baseline=baseline,
            learning_rate=self.learning_rate,
            epoch_seconds=time.perf_counter() - started,
            end_time=time.time(),
            global_step=self.global_step,
            best=is_best,
        )
        if is_best:
            self.best = result
            self.best_state = files.cpu_state_dict(self.model)
        self.history.append(result)
        self.epoch += 1
        self.step_in_epoch = 0
        self._in_epoch = False
        return result

    # --- checkpoints and the registered model -------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The full checkpoint (plain containers and tensors): model, optimizer, scheduler and
        grad-scaler state, epochs done, global step, RNG states, history, best weights and metrics.
        Only between epochs (e.g. in ``on_epoch``): ``FailedPrecondition`` mid-epoch."""
        if self._in_epoch:
            raise FailedPrecondition("a checkpoint can only be taken between epochs")
        rng: dict[str, Any] = {"data": self.generator.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": files.CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "train_pairs": len(self.train_pairs),
            "val_pairs": len(self.val_pairs),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "history": [r.to_dict() for r in self.history],
            "best": self.best.to_dict() if self.best else None,
            "best_state": self.best_state,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "saved_at": datetime.now(UTC).isoformat(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``. The config may differ only in ``RESUMABLE_CHANGES`` (raising
        ``epochs`` trains further, the cosine schedule then stretching over the new total) and
        the pair counts must match; ``InvalidArgument`` otherwise."""
        if state.get("format") != files.CHECKPOINT_FORMAT:
            raise InvalidArgument(f"checkpoint: not a {files.CHECKPOINT_FORMAT} state", field="checkpoint")
        saved = TrainConfig.from_dict(state["config"])
        for field in dataclasses.fields(TrainConfig):
            if field.name not in RESUMABLE_CHANGES and getattr(saved, field.name) != getattr(self.config, field.name):
                raise InvalidArgument(
                    f"{field.name} differs from the checkpoint's ({getattr(self.config, field.name)!r} vs "
                    f"{getattr(saved, field.name)!r})",
                    field=field.name,
                )
        if self.config.epochs < state["epoch"]:
            raise InvalidArgument(
                f"epochs ({self.config.epochs}) is below the checkpoint's completed epochs ({state['epoch']})",
                field="epochs",
            )
        for name, count in (("train_pairs", len(self.train_pairs)), ("val_pairs", len(self.val_pairs))):
            if state[name] != count:
                raise InvalidArgument(f"{name}: the checkpoint had {state[name]} pairs, got {count}", field=name)

        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and self.scaler.is_enabled():  # empty when saved without fp16 loss scaling
            self.scaler.load_state_dict(state["scaler"])
        # The learning rate follows the (possibly stretched) schedule from the restored step on.
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base_lr * self._lr_factor(self.scheduler.last_epoch)
        self.generator.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        cuda_states = state["rng"].get("cuda")
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.step_in_epoch = 0
        self.history = [stored_epoch(r) for r in state["history"]]  # older checkpoints: older shapes
        self.best = stored_epoch(state["best"]) if state["best"] else None
        self.best_state = state["best_state"]
        self.baseline = Quality.from_dict(state["baseline"]) if state["baseline"] else None

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write ``state_dict()`` to ``path`` atomically."""
        files.write_file(self.state_dict(), path)

    def checkpoint_bytes(self) -> bytes:
        """``state_dict()`` serialized, for uploading."""
        return files.to_bytes(self.state_dict())

    @classmethod
    def resume(
        cls,
        source: files.Source,
        train_pairs: Sequence[Pair],
        val_pairs: Sequence[Pair],
        *,
        epochs: int | None = None,
        device: str | None = None,
        threads: int | None = None,
        amp: bool | None = None,
        compile: bool | None = None,
        compile_mode: str | None = None,
        channels_last: bool | None = None,
    ) -> Trainer:
        """A trainer continuing from a checkpoint (path, bytes or file object) with the same pairs,
        optionally with more ``epochs`` or on another device."""
        state = files.read_file(source, files.CHECKPOINT_FORMAT, field="checkpoint")
        config = TrainConfig.from_dict(
            state["config"], epochs=epochs, device=device, threads=threads, amp=amp, compile=compile,
            compile_mode=compile_mode, channels_last=channels_last,
        )  # fmt: skip
        trainer = cls(config, train_pairs, val_pairs)
        trainer.load_state_dict(state)
        return trainer

    def best_model(self) -> dict[str, Any]:
        """The registered-model file's content: the best epoch's weights and metrics.
        ``FailedPrecondition`` before the first epoch ends."""
        if self.best is None or self.best_state is None:
            raise FailedPrecondition("no epoch has finished yet, so there is no model to register")
        return files.model_file(
            architecture=self.config.architecture,
            config=self.model_config,
            state_dict=self.best_state,
            metrics=self.best.validation,
            baseline=self.best.baseline,
            epoch=self.best.epoch,
        )

    def best_model_bytes(self) -> bytes:
        """``best_model()`` serialized: the registered model file for the ``models`` bucket."""
        return files.to_bytes(self.best_model())

    def save_best_model(self, path: str | os.PathLike[str]) -> None:
        """Write ``best_model()`` to ``path`` atomically."""
        files.write_file(self.best_model(), path)


__all__ = [
    "ARCHITECTURES",
    "RESUMABLE_CHANGES",
    "EpochMetrics",
    "Pair",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "split_indices",
]
