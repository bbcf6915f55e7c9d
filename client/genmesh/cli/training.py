"""genmesh synthetic-data / train / report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from genmesh import errors
from genmesh.cli.base import app
from genmesh.cli.common import (
    JsonFlag,
    KeyOption,
    NotifyOption,
    Seed,
    UrlOption,
    fail,
    interrupted,
    progress_bar,
    to_dict,
    usage_error,
)
from genmesh.cli.video import format_eta
from genmesh.client import GenmeshClient
from genmesh.training.v1 import training_pb2


@app.command("synthetic-data")
def synthetic_data(
    num_images: Annotated[int | None, typer.Option(help="Pairs to make, 1..10000 (default 20).")] = None,
    preset: Annotated[str, typer.Option(help="Degradation: document-clean, gaussian-noise, blur, jpeg, mixed...")] = "",
    width: Annotated[int | None, typer.Option(help="Pixels, 64..2048 (default 256).")] = None,
    height: Annotated[int | None, typer.Option(help="Pixels, 64..2048 (default 256).")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="documents, textures or shapes (repeatable).")] = None,
    dataset_name: Annotated[str, typer.Option(help="Pair names start with it (default synthetic).")] = "",
    seed: Seed = None,
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate clean/degraded training pairs into training-data/, with a live progress bar.
    Ctrl-C cancels the job (the pairs it wrote are deleted)."""
    with GenmeshClient(url, api_key) as client:
        events = client.training.stream_synthetic_data(
            num_images=num_images, degradation_type=preset, width=width, height=height,
            content_kinds=kind or (), dataset_name=dataset_name, seed=seed, notify_url=notify_url,
        )  # fmt: skip
        result = follow_task(events, as_json)
    if not as_json:
        typer.echo(f"{result.pair_count} pairs, dataset prefix {result.dataset_prefix}")
        typer.echo(f"manifest s3://{result.manifest.bucket}/{result.manifest.key}")


def follow_task(events: Any, as_json: bool) -> Any:
    """Follow a Training task's stream (synthetic data, restore): the job id at once, then a live bar
    of its steps (pairs, tiles), or every event as JSON; return its result. Errors and Ctrl-C as
    every command does them."""
    result, job_id = None, ""
    try:
        with progress_bar(disable=as_json) as bar:
            task = bar.add_task("queued", total=None)
            for event in events:
                kind = event.WhichOneof("event")
                if not job_id:
                    job_id = event.job_id
                    if not as_json:
                        typer.echo(f"job {job_id}", err=True)
                if as_json:
                    typer.echo(json.dumps(to_dict(event)))
                if kind == "queued":
                    bar.update(task, description=f"queued (position {event.queued.queue_position})")
                elif kind == "started":
                    bar.update(task, description="started")
                elif kind == "progress_update":
                    stage = training_pb2.Stage.Name(event.progress_update.stage)
                    bar.update(task, description=stage.removeprefix("STAGE_").lower().replace("_", " "))
                elif kind == "result":
                    result = event.result
                if event.progress.total_steps:
                    bar.update(task, total=event.progress.total_steps, completed=event.progress.step)
    except errors.GenmeshError as error:
        fail(error)
    except KeyboardInterrupt:
        events.close()  # cancels the call; the server cancels a task whose client went away
        interrupted(job_id)
    if result is None:
        typer.secho("error: the stream ended without a result", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    return result


RESTORE_FORMATS = {"png": "png", "webp": "webp", "jpg": "jpeg", "jpeg": "jpeg"}


@app.command()
def restore(
    model: Annotated[str, typer.Argument(help="A registered model id (see `genmesh models`).")],
    image: Annotated[str, typer.Argument(help="The image to restore: a file, or s3://BUCKET/KEY.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the restored image (.png, .webp, .jpg).")
    ] = Path("restored.png"),
    tile_size: Annotated[
        int | None, typer.Option(help="Tile side, 0 (whole image) or 64..4096, multiple of 8 (default 512).")
    ] = None,
    tile_overlap: Annotated[int | None, typer.Option(help="Pixels tiles overlap, 0..tile_size/2 (default 32).")] = None,
    quality: Annotated[int | None, typer.Option(help="WebP/JPEG quality 1..100 (default 90).")] = None,
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore an image with a trained model, tile by tile, with a live progress bar. Ctrl-C cancels."""
    fmt = RESTORE_FORMATS.get(output.suffix.lower().lstrip("."))
    if fmt is None:
        usage_error(f"--output must end in one of {', '.join('.' + name for name in RESTORE_FORMATS)} "
                    f"(got {output.name!r})")  # fmt: skip
    if not output.parent.is_dir():
        usage_error(f"--output folder {output.parent} does not exist")
    source: dict[str, Any]
    if image.startswith("s3://"):
        bucket, _, key = image.removeprefix("s3://").partition("/")
        if not bucket or not key:
            usage_error(f"IMAGE takes a file or s3://BUCKET/KEY (got {image!r})")
        source = {"image_ref": (bucket, key)}
    else:
        try:
            source = {"image": Path(image).read_bytes()}
        except OSError as exc:
            usage_error(f"IMAGE: cannot read {image}: {exc.strerror or exc}")
    with GenmeshClient(url, api_key) as client:
        events = client.training.stream_restore(
            model, tile_size=tile_size, tile_overlap=tile_overlap, quality=quality, output_format=fmt,
            return_inline=True, notify_url=notify_url, **source,
        )  # fmt: skip
        result = follow_task(events, as_json)
    output.write_bytes(result.image.data)
    if not as_json:
        tiles = f"{result.tile_count} tiles of {result.tile_size}" if result.tile_size else "whole"
        typer.echo(f"{output}  {result.width}x{result.height}  {tiles}  s3://{result.image.bucket}/{result.image.key}")


EPOCH_HEADER = (
    f"{'epoch':>5} {'train loss':>10} {'val loss':>9} {'PSNR':>7} {'SSIM':>6} {'base PSNR':>9} {'gain dB':>8} {'s':>6}"
)


def epoch_row(metrics: Any) -> str:
    gain = metrics.validation.psnr - metrics.baseline.psnr
    return (
        f"{metrics.epoch:>5} {metrics.train_loss:>10.4f} {metrics.validation_loss:>9.4f} "
        f"{metrics.validation.psnr:>7.2f} {metrics.validation.ssim:>6.3f} {metrics.baseline.psnr:>9.2f} "
        f"{gain:>+8.2f} {metrics.epoch_seconds:>6.1f}"
    )


@app.command()
def train(
    layer: Annotated[int | None, typer.Option(help="Model layer to train, 1..99.")] = None,
    dataset_prefix: Annotated[str, typer.Option(help="Pairs whose names start with this.")] = "",
    epochs: Annotated[int | None, typer.Option(help="Epochs, 1..10000 (default 10).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Patches per step, 1..256 (default 4).")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="AdamW learning rate (default 3e-4).")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Crop side, 16..1024, multiple of 8 (default 128).")] = None,
    max_pairs: Annotated[int | None, typer.Option(help="Most pairs to use.")] = None,
    validation_split: Annotated[float | None, typer.Option(help="Held-out share 0.05..0.5 (default 0.2).")] = None,
    architecture: Annotated[
        str | None, typer.Option(help="tiny, small or base (default: base on a GPU server, small on a CPU one).")
    ] = None,
    seed: Seed = None,
    description: Annotated[str, typer.Option(help="Free text for people.")] = "",
    attach: Annotated[str | None, typer.Option(help="Watch an existing job instead of creating one.")] = None,
    resume: Annotated[
        str | None, typer.Option(help="Continue a cancelled or failed job (its spec, or these options, apply).")
    ] = None,
    detach: Annotated[bool, typer.Option(help="Create the job and return without watching.")] = False,
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Start a training job (or --attach to one) and show its per-epoch metrics live.
    The job runs on the server: Ctrl-C stops watching, not training."""
    with GenmeshClient(url, api_key) as client:
        try:
            if attach:
                job_id = attach
            else:
                if layer is None and resume is None:
                    usage_error("--layer is required to create a job (or --resume JOB_ID to continue one)")
                spec = {
                    "layer": layer, "dataset_prefix": dataset_prefix, "num_epochs": epochs, "batch_size": batch_size,
                    "learning_rate": learning_rate, "patch_size": patch_size, "max_pairs": max_pairs,
                    "validation_split": validation_split, "architecture": architecture, "seed": seed,
                    "description": description,
                }  # fmt: skip
                if resume is not None:  # only what was given overrides the resumed job's spec
                    spec = {key: value for key, value in spec.items() if value not in (None, "")}
                job = client.training.create_job(resume_job_id=resume or "", notify_url=notify_url, **spec)
                job_id = job.job_id
                verb = f"resumes {resume}" if resume else "created"
                typer.echo(json.dumps(to_dict(job)) if as_json else f"job {job_id} {verb}")
            if detach:
                return
            if not as_json:
                typer.echo(EPOCH_HEADER)
            for event in client.training.watch(job_id):
                kind = event.WhichOneof("event")
                if as_json:
                    if kind != "progress_update":
                        typer.echo(json.dumps(to_dict(event)))
                elif kind == "progress_update" and not event.replayed:
                    update, progress = event.progress_update, event.progress
                    eta = f"  ETA {format_eta(progress.eta_seconds)}" if progress.eta_seconds > 0 else ""
                    stage = training_pb2.Stage.Name(update.stage).removeprefix("STAGE_").lower()
                    line = f"epoch {update.epoch}/{update.total_epochs} {stage}"
                    if update.steps_per_epoch:  # unknown until the epoch's data is loaded
                        line += f" step {update.step}/{update.steps_per_epoch}"
                    if update.loss:
                        line += f"  loss {update.loss:.4f}"
                    typer.echo(f"\r{line}{eta}\033[K", nl=False, err=True)  # one live line on stderr
                elif kind == "epoch_completed":
                    typer.echo("\r\033[K", nl=False, err=True)
                    typer.echo(epoch_row(event.epoch_completed))
                elif kind == "resumed":
                    typer.echo(f"resumed from epoch {event.resumed.from_epoch} ({event.resumed.reason})")
                elif kind == "result":
                    typer.echo(f"model {event.result.model_id} registered; `genmesh report {job_id}` for the report")
                elif kind == "cancelled":
                    typer.echo(f"cancelled: {event.cancelled.reason}")
                elif kind == "error":
                    typer.secho(f"failed: {event.error.code}: {event.error.message}", err=True, fg=typer.colors.RED)
                    raise typer.Exit(1)
        except errors.GenmeshError as error:
            fail(error)
        except KeyboardInterrupt:
            typer.echo(f"stopped watching; the job goes on (genmesh train --attach {job_id})")


def whole_numbers(value: Any) -> Any:
    """The report's JSON (a protobuf Struct: every number a double) with whole numbers as integers."""
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@app.command()
def report(
    job_id: str,
    plots_dir: Annotated[Path | None, typer.Option(help="Also save the charts (PNG) here.")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a training job's automatic report."""
    with GenmeshClient(url, api_key) as client:
        try:
            found = client.training.get_report(job_id, return_inline=plots_dir is not None)
        except errors.GenmeshError as error:
            fail(error)
    typer.echo(json.dumps(whole_numbers(to_dict(found.data)), indent=2) if as_json else found.text)
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for plot in found.plots:
            (plots_dir / f"{plot.name}.png").write_bytes(plot.artifact.data)
