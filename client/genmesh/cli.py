"""The ``genmesh`` command line: run the mesh locally and use it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from google.protobuf import json_format

from genmesh import errors
from genmesh.client import GenmeshClient
from genmesh.client.requests import SCHEDULERS, VIDEO_FORMATS
from genmesh.image.v1 import image_pb2
from genmesh.services import SERVICES, service_for_job
from genmesh.video.v1 import video_pb2

app = typer.Typer(help="genmesh: a self-hosted generative-AI service mesh.", no_args_is_help=True)
job_app = typer.Typer(help="Inspect and cancel jobs.", no_args_is_help=True)
app.add_typer(job_app, name="job")

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="GENMESH_URL", help="Gateway host:port (default 127.0.0.1:8080).")
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="GENMESH_API_KEY", help="API key for the gateway.", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON lines instead of text.")]


def to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def fail(error: errors.GenmeshError) -> None:
    typer.secho(f"error: {error.code}: {error.message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2 if isinstance(error, errors.InvalidArgument) else 1)


def usage_error(message: str) -> NoReturn:
    """A one-line error about the command line itself, found before anything is sent (exit 2)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def load_schema(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--json-schema is neither a JSON file nor valid JSON: {exc}") from None


def print_stream(events: Any, as_json: bool) -> Any:
    """Print deltas as they arrive (or every event as JSON); return the result message."""
    result = None
    for event in events:
        kind = event.WhichOneof("event")
        if as_json:
            typer.echo(json.dumps(to_dict(event)))
        elif kind == "delta":
            sys.stdout.write(event.delta.text)
            sys.stdout.flush()
        if kind == "result":
            result = event.result
    if not as_json and result is not None:
        sys.stdout.write("\n")
        timings = result.timings
        typer.secho(
            f"[{result.model} | {result.usage.completion_tokens} tokens | "
            f"first token {timings.time_to_first_token_ms:.0f} ms | {timings.tokens_per_second:.1f} tok/s | "
            + (
                f"saved s3://{result.record.bucket}/{result.record.key}]" if result.HasField("record") else "not saved]"
            ),
            err=True,
            dim=True,
        )
    return result


SamplingArgs = dict[str, Any]


def sampling_args(
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    seed: int | None,
    stop: list[str] | None,
    json_schema: str | None,
    json_mode: bool,
    model: str,
) -> SamplingArgs:
    return {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "stop": stop or (),
        "json_schema": load_schema(json_schema),
        "json": json_mode,
        "model": model,
    }


MaxTokens = Annotated[int | None, typer.Option(help="Most tokens to generate (1..32768; default 256).")]
Temperature = Annotated[float | None, typer.Option(help="0 = greedy, up to 2 (default 0.8).")]
TopP = Annotated[float | None, typer.Option(help="Nucleus sampling mass (0, 1].")]
TopK = Annotated[int | None, typer.Option(help="Top-k sampling, 0 disables.")]
Seed = Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")]
Stop = Annotated[list[str] | None, typer.Option(help="Stop sequence (repeatable).")]
Schema = Annotated[
    str | None, typer.Option("--json-schema", help="Constrain output to this JSON schema (file or JSON).")
]
JsonMode = Annotated[bool, typer.Option("--json-output", help="Constrain output to valid JSON.")]
Model = Annotated[str, typer.Option(help="Model name (see `genmesh models`); default: the server's.")]


@app.command()
def text(
    prompt: Annotated[str, typer.Argument(help="The prompt ('-' reads standard input).")],
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    seed: Seed = None,
    stop: Stop = None,
    json_schema: Schema = None,
    json_output: JsonMode = False,
    model: Model = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Complete a prompt, printing tokens as they stream."""
    if prompt == "-":
        prompt = sys.stdin.read()
    options = sampling_args(max_tokens, temperature, top_p, top_k, seed, stop, json_schema, json_output, model)
    with GenmeshClient(url, api_key) as client:
        try:
            print_stream(client.text.stream_generate(prompt, **options), as_json)
        except errors.GenmeshError as error:
            fail(error)


@app.command()
def chat(
    message: Annotated[str | None, typer.Argument(help="One user message; omit for an interactive chat.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message to start with.")] = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    seed: Seed = None,
    stop: Stop = None,
    json_schema: Schema = None,
    json_output: JsonMode = False,
    model: Model = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Chat with the model's chat template; interactive when no message is given (Ctrl-D ends)."""
    options = sampling_args(max_tokens, temperature, top_p, top_k, seed, stop, json_schema, json_output, model)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    interactive = message is None
    with GenmeshClient(url, api_key) as client:
        while True:
            if interactive:
                try:
                    message = input("you> ")
                except EOFError:
                    typer.echo()
                    return
                if not message.strip():
                    continue
            history.append({"role": "user", "content": message or ""})
            try:
                result = print_stream(client.text.stream_chat(history, **options), as_json)
            except errors.GenmeshError as error:
                if not interactive:
                    fail(error)
                typer.secho(f"error: {error.code}: {error.message}", err=True, fg=typer.colors.RED)
                history.pop()
                continue
            if not interactive:
                return
            history.append({"role": "assistant", "content": result.text if result else ""})


def output_paths(output: Path, count: int) -> list[Path]:
    """``out.png`` for one image; ``out_0.png``, ``out_1.png``... for a batch."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{index}{output.suffix}") for index in range(count)]


@app.command()
def image(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the image (PNG/WebP/JPEG).")] = Path(
        "image.png"
    ),
    negative_prompt: Annotated[str, typer.Option(help="What to steer away from.")] = "",
    width: Annotated[int | None, typer.Option(help="Pixels, 64..2048, multiple of 8 (default: model's).")] = None,
    height: Annotated[int | None, typer.Option(help="Pixels, 64..2048, multiple of 8 (default: model's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps, 1..150 (default 25).")] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="CFG scale 0..30 (default 7.5).")] = None,
    seed: Seed = None,
    scheduler: Annotated[str | None, typer.Option(help="euler, euler_a, dpmpp_2m_karras, ddim, ...")] = None,
    num_images: Annotated[int | None, typer.Option(help="Images in one batch, 1..8.")] = None,
    init_image: Annotated[Path | None, typer.Option(help="An init image for img2img.")] = None,
    strength: Annotated[float | None, typer.Option(help="img2img strength (0, 1] (default 0.75).")] = None,
    quality: Annotated[int | None, typer.Option(help="WebP/JPEG quality 1..100.")] = None,
    model: Model = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate images (txt2img, or img2img with --init-image) with a live progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    suffix = output.suffix.lower().lstrip(".")
    fmt = {"jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}.get(suffix, "png")
    options: dict[str, Any] = {
        "negative_prompt": negative_prompt, "width": width, "height": height, "steps": steps,
        "guidance_scale": guidance_scale, "seed": seed, "scheduler": scheduler, "num_images": num_images,
        "strength": strength, "quality": quality, "model": model, "output_format": fmt, "return_inline": True,
    }  # fmt: skip
    if init_image is not None:
        options["init_image"] = init_image.read_bytes()
    result = None
    with GenmeshClient(url, api_key) as client:
        try:
            events = client.images.stream_generate(prompt, **options)
            with Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(), transient=True, disable=as_json, console=None,
            ) as bar:  # fmt: skip
                task = bar.add_task("queued", total=None)
                for event in events:
                    kind = event.WhichOneof("event")
                    if as_json:
                        typer.echo(json.dumps(to_dict(event)))
                    if kind == "queued":
                        bar.update(task, description=f"queued (position {event.queued.queue_position})")
                    elif kind == "progress_update":
                        stage = image_pb2.Stage.Name(event.progress_update.stage)
                        bar.update(task, description=stage.removeprefix("STAGE_").lower().replace("_", " "))
                        if event.progress.total_steps:
                            bar.update(task, total=event.progress.total_steps, completed=event.progress.step)
                    elif kind == "result":
                        result = event.result
        except errors.GenmeshError as error:
            fail(error)
    if result is None:
        return
    for path, generated in zip(output_paths(output, len(result.images)), result.images, strict=True):
        path.write_bytes(generated.artifact.data)
        if not as_json:
            typer.echo(f"{path}  seed {generated.seed}  s3://{generated.artifact.bucket}/{generated.artifact.key}")


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
        text = f"denoising step {progress.step}/{progress.total_steps}"
    elif stage == video_pb2.STAGE_DECODING:
        update = event.progress_update
        text = f"decoding frames {update.frames_decoded}/{update.total_frames}"
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
    steps: Annotated[int | None, typer.Option(help="Denoising steps, 1..150 (default 25).")] = None,
    seed: Seed = None,
    width: Annotated[int | None, typer.Option(help="Pixels, 64..1024, multiple of 8 (default 512).")] = None,
    height: Annotated[int | None, typer.Option(help="Pixels, 64..1024, multiple of 8 (default 512).")] = None,
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
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate a short animation (text-, image- or video-to-video) with live progress.
    Ctrl-C cancels the job."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

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
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=not live,
            ) as bar:
                task = bar.add_task("connecting", total=None)
                for event in events:
                    kind = event.WhichOneof("event")
                    if not job_id:
                        job_id = event.job_id
                        if not as_json:
                            typer.echo(f"job {job_id}")
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
            typer.echo(f"cancelled job {job_id}" if job_id else "cancelled (before the job was queued)", err=True)
            raise typer.Exit(130) from None
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


@app.command("synthetic-data")
def synthetic_data(
    num_images: Annotated[int | None, typer.Option(help="Pairs to make, 1..10000 (default 20).")] = None,
    preset: Annotated[str, typer.Option(help="Degradation: document-clean, gaussian-noise, blur, jpeg, mixed...")] = "",
    width: Annotated[int | None, typer.Option(help="Pixels, 64..2048 (default 256).")] = None,
    height: Annotated[int | None, typer.Option(help="Pixels, 64..2048 (default 256).")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="documents, textures or shapes (repeatable).")] = None,
    dataset_name: Annotated[str, typer.Option(help="Pair names start with it (default synthetic).")] = "",
    seed: Seed = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate clean/degraded training pairs into training-data/."""
    with GenmeshClient(url, api_key) as client:
        try:
            result = client.training.generate_synthetic_data(
                num_images=num_images, degradation_type=preset, width=width, height=height,
                content_kinds=kind or (), dataset_name=dataset_name, seed=seed,
            )  # fmt: skip
        except errors.GenmeshError as error:
            fail(error)
    if as_json:
        typer.echo(json.dumps(to_dict(result)))
    else:
        typer.echo(f"{result.pair_count} pairs, dataset prefix {result.dataset_prefix}")
        typer.echo(f"manifest s3://{result.manifest.bucket}/{result.manifest.key}")


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
    architecture: Annotated[str | None, typer.Option(help="tiny, small or base (default base).")] = None,
    seed: Seed = None,
    description: Annotated[str, typer.Option(help="Free text for people.")] = "",
    attach: Annotated[str | None, typer.Option(help="Watch an existing job instead of creating one.")] = None,
    detach: Annotated[bool, typer.Option(help="Create the job and return without watching.")] = False,
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
                if layer is None:
                    raise typer.BadParameter("--layer is required to create a job", param_hint="--layer")
                job = client.training.create_job(
                    layer=layer, dataset_prefix=dataset_prefix, num_epochs=epochs, batch_size=batch_size,
                    learning_rate=learning_rate, patch_size=patch_size, max_pairs=max_pairs,
                    validation_split=validation_split, architecture=architecture, seed=seed, description=description,
                )  # fmt: skip
                job_id = job.job_id
                typer.echo(json.dumps(to_dict(job)) if as_json else f"job {job_id} created")
            if detach:
                return
            if not as_json:
                typer.echo(EPOCH_HEADER)
            for event in client.training.watch(job_id):
                kind = event.WhichOneof("event")
                if as_json:
                    if kind != "progress_update":
                        typer.echo(json.dumps(to_dict(event)))
                elif kind == "epoch_completed":
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
    typer.echo(json.dumps(to_dict(found.data), indent=2) if as_json else found.text)
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for plot in found.plots:
            (plots_dir / f"{plot.name}.png").write_bytes(plot.artifact.data)


@app.command()
def models(url: UrlOption = None, api_key: KeyOption = None, as_json: JsonFlag = False) -> None:
    """List the models each service can run."""
    listed: list[tuple[str, Any]] = []
    with GenmeshClient(url, api_key) as client:
        services = (
            ("text", client.text),
            ("image", client.images),
            ("video", client.videos),
            ("training", client.training),
        )
        for service, sub in services:
            try:
                listed.extend((service, model) for model in sub.list_models())
            except errors.Unavailable:
                continue  # that service is not running
            except errors.GenmeshError as error:
                fail(error)
    for service, model in listed:
        if as_json:
            typer.echo(json.dumps({"service": service, **to_dict(model)}))
        else:
            if service == "training":
                delta = f"{model.delta_vs_previous.psnr:+.2f} dB vs previous" if model.previous_model_id else "first"
                typer.echo(
                    f"{service:8} {model.model_id:28} v{model.version:<3} PSNR {model.metrics.psnr:6.2f}  {delta}"
                )
                continue
            flags = ", ".join(f for f, on in (("default", model.is_default), ("loaded", model.loaded)) if on)
            if service == "video" and model.labels.get("kind") == "motion_adapter":
                flags = ", ".join(filter(None, ("adapter", flags)))
            typer.echo(f"{service:8} {model.name:28} {model.size_bytes / 1e6:8.1f} MB  {flags:16} {model.description}")


def job_service(client: GenmeshClient, job_id: str) -> Any:
    """The client of the service that owns a job, by its id's prefix (``genmesh.services``)."""
    service = service_for_job(job_id)
    clients = {"text": client.text, "image": client.images, "video": client.videos, "training": client.training}
    if service is None:
        prefixes = ", ".join(f"{prefix}-" for info in SERVICES for prefix in info.job_prefixes)
        usage_error(f"job id {job_id!r} does not start with a known prefix ({prefixes})")
    return clients[service.name]


@job_app.command("get")
def job_get(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Show a job's status and result as JSON."""
    with GenmeshClient(url, api_key) as client:
        try:
            typer.echo(json.dumps(to_dict(job_service(client, job_id).get_job(job_id)), indent=2))
        except errors.GenmeshError as error:
            fail(error)


@job_app.command("cancel")
def job_cancel(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel a queued or running job."""
    with GenmeshClient(url, api_key) as client:
        try:
            typer.echo(json.dumps(to_dict(job_service(client, job_id).cancel_job(job_id)), indent=2))
        except errors.GenmeshError as error:
            fail(error)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Gateway port on 127.0.0.1.")] = 8080,
    services: Annotated[str, typer.Option(help="Comma-separated services to start (default: all implemented).")] = "",
    data_dir: Annotated[
        Path | None, typer.Option(envvar="GENMESH_DATA_DIR", help="Where state lives (default ~/.local/share/genmesh).")
    ] = None,
) -> None:
    """Run the whole mesh locally: S3 server, services, Envoy. Ctrl-C stops everything."""
    from servers.mesh.launcher import LaunchOptions, run_mesh

    raise typer.Exit(run_mesh(LaunchOptions.build(port=port, services=services, data_dir=data_dir)))


if __name__ == "__main__":
    app()
