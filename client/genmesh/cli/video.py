"""genmesh video."""

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
    LoraOption,
    Model,
    NotifyOption,
    Seed,
    UrlOption,
    counted,
    fail,
    interrupted,
    lora_option,
    progress_bar,
    to_dict,
    usage_error,
)
from genmesh.client import GenmeshClient
from genmesh.client.requests import SCHEDULERS, VIDEO_FORMATS
from genmesh.video.v1 import video_pb2

# By enum name, so a stage this copy of the proto lacks (or a newer server adds) still shows.
VIDEO_STAGES = {
    "STAGE_LOADING_MODEL": "loading model",
    "STAGE_PREPARING_INPUT": "preparing input",
    "STAGE_DENOISING": "denoising",
    "STAGE_DECODING": "decoding frames",
    "STAGE_ENCODING": "encoding",
    "STAGE_SAVING": "saving",
}


def video_format(output: Path) -> str:
    """The output format named by ``-o``'s extension; any other extension is a usage error."""
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in VIDEO_FORMATS:
        allowed = ", ".join(f".{name}" for name in VIDEO_FORMATS)
        usage_error(f"--output must end in one of {allowed} (got {output.name!r})")
    return fmt


def init_media(option: str, kind: str, value: str) -> dict[str, Any]:
    """``--init-image``/``--init-video`` -> request options: ``s3://BUCKET/KEY`` names a stored object
    (e.g. an image result), anything else is a local file read now."""
    if value.startswith("s3://"):
        bucket, _, key = value.removeprefix("s3://").partition("/")
        if not bucket or not key:
            usage_error(f"{option} takes a file or s3://BUCKET/KEY (got {value!r})")
        return {f"init_{kind}_ref": (bucket, key)}
    try:
        return {f"init_{kind}": Path(value).read_bytes()}
    except OSError as exc:
        usage_error(f"{option}: cannot read {value}: {exc.strerror or exc}")


def prompt_schedule(values: list[str] | None) -> dict[int, str]:
    """``--prompt-at FRAME=PROMPT`` (repeatable) -> {frame: prompt}."""
    schedule: dict[int, str] = {}
    for value in values or ():
        frame, sep, text = value.partition("=")
        if not sep or not frame.strip().isdigit() or not text.strip():
            usage_error(f"--prompt-at takes FRAME=PROMPT, e.g. --prompt-at '16=the meadow at night' (got {value!r})")
        if int(frame) in schedule:
            usage_error(f"--prompt-at names frame {int(frame)} more than once")
        schedule[int(frame)] = text.strip()
    return schedule


def format_eta(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def video_progress_text(event: video_pb2.GenerateVideoResponse) -> str:
    """What a progress event says, for the live display: "denoising step 5/25  ETA 0:42"..."""
    stage, progress = event.progress_update.stage, event.progress
    if stage == video_pb2.STAGE_DENOISING:
        text = counted("denoising step", progress.step, progress.total_steps)
    elif stage == video_pb2.STAGE_DECODING:
        update = event.progress_update
        text = counted("decoding frames", update.frames_decoded, update.total_frames)
    else:
        known = video_pb2.Stage.DESCRIPTOR.values_by_number.get(stage)
        name = known.name if known is not None else ""
        text = VIDEO_STAGES.get(name) or name.removeprefix("STAGE_").lower().replace("_", " ") or "working"
    if progress.eta_seconds > 0 and stage in (video_pb2.STAGE_DENOISING, video_pb2.STAGE_DECODING):
        text += f"  ETA {format_eta(progress.eta_seconds)}"
    return text


def without_inline_data(event: video_pb2.GenerateVideoResponse) -> video_pb2.GenerateVideoResponse:
    """The event with the result's inline bytes dropped (they go to the output file, not to --json)."""
    if event.WhichOneof("event") != "result":
        return event
    copy = video_pb2.GenerateVideoResponse()
    copy.CopyFrom(event)
    for artifact in (copy.result.video, copy.result.poster, *copy.result.frames):
        artifact.ClearField("data")
    return copy


@app.command()
def video(
    prompt: Annotated[str, typer.Argument(help="What to animate.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the video; .gif, .mp4 or .webp picks the format.")
    ] = Path("video.gif"),
    frames: Annotated[int | None, typer.Option(help="Frames, 2..64 (default 16).")] = None,
    fps: Annotated[int | None, typer.Option(help="Playback frames per second, 1..60 (default 8).")] = None,
    init_image: Annotated[
        str | None, typer.Option(help="Animate this still: a file, or s3://BUCKET/KEY (e.g. an image result).")
    ] = None,
    init_video: Annotated[
        str | None, typer.Option(help="Restyle this GIF/WebP/MP4: a file, or s3://BUCKET/KEY.")
    ] = None,
    strength: Annotated[
        float | None,
        typer.Option(help="How much of the init media is replaced, (0, 1] (default 0.8 image, 0.6 video)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Denoising steps, 1..150 (default 25; fewer on a CPU or the smoke-test model).")
    ] = None,
    seed: Seed = None,
    width: Annotated[
        int | None,
        typer.Option(help="Pixels, 64..1024, multiple of 8 (default 512; smaller on a CPU or the smoke-test model)."),
    ] = None,
    height: Annotated[
        int | None,
        typer.Option(help="Pixels, 64..1024, multiple of 8 (default 512; smaller on a CPU or the smoke-test model)."),
    ] = None,
    guidance: Annotated[
        float | None, typer.Option("--guidance", "--guidance-scale", help="CFG scale 0..30 (default 7.5).")
    ] = None,
    scheduler: Annotated[str | None, typer.Option(help="ddim (default), euler_a, dpmpp_2m_karras, ...")] = None,
    negative_prompt: Annotated[str, typer.Option(help="What to steer away from.")] = "",
    model: Model = "",
    motion_adapter: Annotated[
        str, typer.Option(help="Motion adapter (see `genmesh models`); default: the server's.")
    ] = "",
    prompt_at: Annotated[
        list[str] | None,
        typer.Option(
            help="Prompt travel: FRAME=PROMPT, the prompt at that frame, blended between frames (repeatable)."
        ),
    ] = None,
    save_frames: Annotated[bool, typer.Option(help="Also store every frame as a PNG on the server.")] = False,
    lora: LoraOption = None,
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate a short animation (text-, image- or video-to-video) with live progress.
    Ctrl-C cancels the job."""
    from rich.console import Console

    # Everything that can be wrong with the command line is found before anything is sent.
    fmt = video_format(output)
    if output.is_dir():
        usage_error(f"--output {output} is a folder; give a file name ending in .{fmt}")
    if not output.parent.is_dir():
        usage_error(f"--output folder {output.parent} does not exist")
    if scheduler and scheduler not in SCHEDULERS:
        usage_error(f"--scheduler must be one of {', '.join(SCHEDULERS)} (got {scheduler!r})")
    if init_image is not None and init_video is not None:
        usage_error("give --init-image or --init-video, not both")
    if strength is not None and init_image is None and init_video is None:
        usage_error("--strength needs --init-image or --init-video")
    options: dict[str, Any] = {
        "model": model,
        "motion_adapter": motion_adapter,
        "negative_prompt": negative_prompt,
        "width": width,
        "height": height,
        "num_frames": frames,
        "fps": fps,
        "steps": steps,
        "guidance_scale": guidance,
        "seed": seed,
        "scheduler": scheduler,
        "output_format": fmt,
        "return_inline": True,
        "save_frames": save_frames,
        "strength": strength,
        "prompt_schedule": prompt_schedule(prompt_at),
        "loras": lora_option(lora),
        "notify_url": notify_url,
    }
    if init_image is not None:
        options.update(init_media("--init-image", "image", init_image))
    elif init_video is not None:
        options.update(init_media("--init-video", "video", init_video))

    job_id = ""
    result = None
    console = Console()  # the live display only on a terminal: piped output stays plain lines
    live = not as_json and console.is_interactive
    with GenmeshClient(url, api_key) as client:
        events = client.videos.stream_generate(prompt, **options)
        try:
            with progress_bar(disable=not live, console=console, elapsed=True) as bar:
                task = bar.add_task("connecting", total=None)
                for event in events:
                    kind = event.WhichOneof("event")
                    if not job_id:
                        job_id = event.job_id
                        if not as_json:
                            typer.echo(f"job {job_id}", err=True)  # as every command: stdout is the result
                    if as_json:
                        typer.echo(json.dumps(to_dict(without_inline_data(event))))
                    if kind == "queued":
                        bar.update(task, description=f"queued (position {event.queued.queue_position})")
                    elif kind == "started":
                        bar.update(task, description="started")
                    elif kind == "progress_update":
                        bar.update(task, description=video_progress_text(event))
                        stage, update = event.progress_update.stage, event.progress_update
                        if stage == video_pb2.STAGE_DENOISING and event.progress.total_steps:
                            bar.update(task, total=event.progress.total_steps, completed=event.progress.step)
                        elif stage == video_pb2.STAGE_DECODING and update.total_frames:
                            bar.update(task, total=update.total_frames, completed=update.frames_decoded)
                    elif kind == "result":
                        result = event.result
        except errors.GenmeshError as error:
            fail(error)
        except KeyboardInterrupt:
            events.close()  # cancels the call; the server cancels a job whose client went away
            interrupted(job_id)
    if result is None:
        typer.secho("error: the stream ended without a result", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    clip = result.video
    if not clip.data:
        typer.secho(f"error: no video bytes came back; it is at s3://{clip.bucket}/{clip.key}", err=True, fg="red")
        raise typer.Exit(1)
    try:
        output.write_bytes(clip.data)
    except OSError as exc:
        typer.secho(f"error: cannot write {output}: {exc.strerror or exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    if as_json:
        return
    if save_frames:
        if result.frames:
            folder = result.frames[0].key.rpartition("/")[0]
            typer.echo(f"{len(result.frames)} frames stored as PNG under s3://{result.frames[0].bucket}/{folder}/")
        else:
            typer.echo("no frames were stored (the server ignored --save-frames)")
    typer.echo(
        f"{output}  {result.num_frames} frames  {result.fps} fps  {result.duration_seconds:.2f} s  "
        f"seed {result.seed}  s3://{clip.bucket}/{clip.key}"
    )
    if result.parameters.defaults_note:  # the smoke-test model or a CPU: smaller than the model's own
        typer.echo(f"note: {result.parameters.defaults_note}", err=True)
