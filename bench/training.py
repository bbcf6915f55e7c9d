"""Restormer training throughput: the Trainer's loop vs a bare PyTorch loop, in one run.

    .venv/bin/python bench/training.py [--architecture tiny] [--batch-size 4] [--patch-size 64]
                                       [--steps 60] [--threads 2] [--device cpu]
    .venv/bin/python bench/training.py --architecture base --batch-size 8 --patch-size 128 \\
                                       --device cuda --amp                           # on a GPU
    .venv/bin/python bench/training.py --architecture base --batch-size 8 --patch-size 128 \
                                       --device cuda --amp --compile [--channels-last]  # compiled

Both loops train the same freshly seeded model on the same pairs (smooth random images with
Gaussian noise) with the same batch, patch, AdamW, cosine schedule and L1 loss; each draws random
crops with flips. The Trainer runs as the service runs it, with progress and cancel callbacks.
Both loops warm up first; then ``--steps`` optimizer steps are timed (synchronising the GPU),
interleaved ``--repeats`` times so drift on a shared machine hits both alike, best run kept.
Prints a table (steps/s, samples/s, ms/step; on a GPU also peak memory), the PSNR the Trainer's
model reaches on held-out pairs after its warm-up + timed steps against the degraded inputs'
PSNR, and last ``ratio=<Trainer steps/s / bare steps/s>``. ``--compile`` / ``--channels-last`` turn
those on for the Trainer only (the bare loop stays the eager baseline a user would write); the
Trainer's first step (the compile, the first run's) is reported beside the steady steps/s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from servers.compute.devices import configure_threads, device_label, select_device
from servers.training.model import TrainConfig, Trainer, build_model, count_parameters
from servers.training.model.trainer import Pair

DISTINCT_IMAGES = 16  # the training list repeats these (no memory growth with --steps)
VALIDATION_IMAGES = 4


@dataclass
class Timing:
    steps_per_s: float
    peak_bytes: int | None
    first_step_s: float | None = None  # from the start of the loop to the end of its first step


def make_pairs(count: int, size: int, seed: int, noise: float = 0.1) -> list[Pair]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 8 + 1, size // 8 + 1, generator=g)
    clean = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    degraded = (clean + noise * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return list(zip(degraded, clean, strict=True))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def bare_loop(config: TrainConfig, pairs: list[Pair], warmup: int, steps: int, device: torch.device) -> Timing:
    """The shortest honest PyTorch loop for the same work."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.architecture).to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        betas=config.betas,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda" or None,
    )
    total = warmup + steps
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=config.min_learning_rate)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    rng = random.Random(config.seed)
    p = config.patch_size
    reset_peak(device)
    started, loop_started, first_step = 0.0, time.perf_counter(), 0.0
    for step in range(total):
        if step == 1:
            synchronize(device)
            first_step = time.perf_counter() - loop_started
        if step == warmup:
            synchronize(device)
            started = time.perf_counter()
        xs, ys = [], []
        for _ in range(config.batch_size):
            d, c = pairs[rng.randrange(len(pairs))]
            top, left = rng.randrange(d.shape[-2] - p + 1), rng.randrange(d.shape[-1] - p + 1)
            d, c = d[:, top : top + p, left : left + p], c[:, top : top + p, left : left + p]
            if rng.random() < 0.5:
                d, c = d.flip(-1), c.flip(-1)
            if rng.random() < 0.5:
                d, c = d.flip(-2), c.flip(-2)
            if rng.random() < 0.5:
                d, c = d.transpose(-1, -2), c.transpose(-1, -2)
            xs.append(d)
            ys.append(c)
        x = torch.stack(xs).to(device, non_blocking=True)
        y = torch.stack(ys).to(device, non_blocking=True)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with autocast:
            out = model(x)
        loss = F.l1_loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    synchronize(device)
    return Timing(steps / (time.perf_counter() - started), peak(device), first_step)


def trainer_loop(
    config: TrainConfig, pairs: list[Pair], val: list[Pair], warmup: int, steps: int, device: torch.device
) -> tuple[Timing, float, float]:
    """The Trainer for exactly one epoch of ``warmup + steps`` steps, then its validation.
    Returns the timing and (model PSNR, degraded PSNR) on the validation pairs."""
    trainer = Trainer(config, pairs, val)
    assert trainer.steps_per_epoch == warmup + steps
    marks: dict[int, float] = {}

    def on_step(step: int, total: int) -> None:
        if step in (1, warmup, warmup + steps):
            synchronize(device)
            marks[step] = time.perf_counter()

    def check_cancelled() -> None:
        return None

    reset_peak(device)
    result: list = []
    started = time.perf_counter()
    trainer.run(on_step=on_step, on_epoch=result.append, check_cancelled=check_cancelled)
    timing = Timing(steps / (marks[warmup + steps] - marks[warmup]), peak(device), marks[1] - started)
    return timing, result[0].validation.psnr, result[0].baseline.psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="tiny", choices=("tiny", "small", "base"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each loop, interleaved; best kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--amp", action="store_true", help="bf16/fp16 autocast (GPU only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the Trainer's step")
    parser.add_argument("--channels-last", action="store_true", help="the Trainer in channels-last")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--image-size", type=int, default=0, help="training image side (default 2 x patch)")
    args = parser.parse_args()

    configure_threads(args.threads)
    device = select_device(args.device)
    size = args.image_size or 2 * args.patch_size
    steps_per_run = args.warmup + args.steps
    distinct = make_pairs(DISTINCT_IMAGES + VALIDATION_IMAGES, size, seed=0)
    train, val = distinct[:DISTINCT_IMAGES], distinct[DISTINCT_IMAGES:]
    # One Trainer epoch = exactly warm-up + timed steps.
    pairs = [train[i % len(train)] for i in range(steps_per_run * args.batch_size)]
    config = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patch_size=args.patch_size,
        seed=0,
        architecture=args.architecture,
        device=str(device),
        amp=args.amp,
        threads=args.threads,
    )
    trainer_config = dataclasses.replace(config, compile=args.compile, channels_last=args.channels_last)

    bare: list[Timing] = []
    mine: list[Timing] = []
    psnr_model = psnr_degraded = math.nan
    for _ in range(args.repeats):
        bare.append(bare_loop(config, pairs, args.warmup, args.steps, device))
        timing, psnr_model, psnr_degraded = trainer_loop(trainer_config, pairs, val, args.warmup, args.steps, device)
        mine.append(timing)
    best_bare = max(bare, key=lambda t: t.steps_per_s)
    best_mine = max(mine, key=lambda t: t.steps_per_s)
    options = [name for name, on in (("compile", args.compile), ("channels-last", args.channels_last)) if on]

    with torch.device("meta"):
        params = count_parameters(build_model(args.architecture))
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else f"cpu, {args.threads} threads"
    print(
        f"restormer {args.architecture} ({params:,} parameters), batch {args.batch_size}, patch {args.patch_size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.repeats}, "
        f"device {device_label(device)} ({name}){', amp' if args.amp and gpu else ''}"
    )
    header = f"{'loop':<26} {'steps/s':>9} {'samples/s':>10} {'ms/step':>9}"
    print(header + (f" {'peak GiB':>9}" if gpu else ""))
    trainer_label = "Trainer" + (f" ({', '.join(options)})" if options else " (service loop)")
    for label, t in (("bare PyTorch", best_bare), (trainer_label, best_mine)):
        row = f"{label:<26} {t.steps_per_s:>9.2f} {t.steps_per_s * args.batch_size:>10.1f} {1000 / t.steps_per_s:>9.1f}"
        print(row + (f" {t.peak_bytes / 2**30:>9.2f}" if gpu and t.peak_bytes is not None else ""))
    first = mine[0].first_step_s
    print(f"Trainer first step (first run{', incl. compile' if args.compile else ''}): {first:.2f} s; "
          f"bare loop first step: {bare[0].first_step_s:.2f} s")  # fmt: skip
    print(
        f"validation PSNR after {steps_per_run} steps (lr {args.learning_rate:g}): model {psnr_model:.2f} dB, "
        f"degraded {psnr_degraded:.2f} dB, gain {psnr_model - psnr_degraded:+.2f} dB"
    )
    print(f"ratio={best_mine.steps_per_s / best_bare.steps_per_s:.3f}")


if __name__ == "__main__":
    main()
