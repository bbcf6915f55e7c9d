"""genmesh image."""

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
    fail,
    interrupted,
    lora_option,
    progress_bar,
    to_dict,
    usage_error,
)
from genmesh.client import GenmeshClient
from genmesh.image.v1 import image_pb2

IMAGE_FORMATS = {"png": "png", "webp": "webp", "jpg": "jpeg", "jpeg": "jpeg"}


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
    width: Annotated[
        int | None, typer.Option(help="Pixels, 64..2048, multiple of 8 (default: the model's; smaller on a CPU).")
    ] = None,
    height: Annotated[
        int | None, typer.Option(help="Pixels, 64..2048, multiple of 8 (default: the model's; smaller on a CPU).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Denoising steps, 1..150 (default 25; fewer on a CPU or the smoke-test model).")
    ] = None,
    guidance_scale: Annotated[float | None, typer.Option(help="CFG scale 0..30 (default 7.5).")] = None,
    seed: Seed = None,
    scheduler: Annotated[str | None, typer.Option(help="euler, euler_a, dpmpp_2m_karras, ddim, ...")] = None,
    num_images: Annotated[int | None, typer.Option(help="Images in one batch, 1..8.")] = None,
    init_image: Annotated[Path | None, typer.Option(help="An init image for img2img.")] = None,
    mask: Annotated[
        Path | None, typer.Option(help="Inpaint: a mask the init image's size, white = re-draw, black = keep.")
    ] = None,
    strength: Annotated[
        float | None, typer.Option(help="img2img strength (0, 1] (default 0.75; 1.0 with --mask).")
    ] = None,
    lora: LoraOption = None,
    quality: Annotated[int | None, typer.Option(help="WebP/JPEG quality 1..100.")] = None,
    model: Model = "",
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate images (txt2img, img2img with --init-image, inpainting with --init-image and --mask)
    with a live progress bar."""
    suffix = output.suffix.lower().lstrip(".")
    fmt = IMAGE_FORMATS.get(suffix)
    if fmt is None:
        usage_error(
            f"--output must end in one of {', '.join('.' + name for name in IMAGE_FORMATS)} (got {output.name!r})"
        )
    if not output.parent.is_dir():
        usage_error(f"--output folder {output.parent} does not exist")
    options: dict[str, Any] = {
        "negative_prompt": negative_prompt, "width": width, "height": height, "steps": steps,
        "guidance_scale": guidance_scale, "seed": seed, "scheduler": scheduler, "num_images": num_images,
        "strength": strength, "quality": quality, "model": model, "output_format": fmt, "return_inline": True,
        "notify_url": notify_url,
    }  # fmt: skip
    if mask is not None and init_image is None:
        usage_error("--mask needs --init-image (the image to inpaint)")
    options["loras"] = lora_option(lora)
    for flag, path, key in (("--init-image", init_image, "init_image"), ("--mask", mask, "mask_image")):
        if path is not None:
            try:
                options[key] = path.read_bytes()
            except OSError as exc:
                usage_error(f"{flag}: cannot read {path}: {exc.strerror or exc}")
    job_id = ""
    result = None
    with GenmeshClient(url, api_key) as client:
        try:
            events = client.images.stream_generate(prompt, **options)
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
                    elif kind == "progress_update":
                        stage = image_pb2.Stage.Name(event.progress_update.stage)
                        bar.update(task, description=stage.removeprefix("STAGE_").lower().replace("_", " "))
                        if event.progress.total_steps:
                            bar.update(task, total=event.progress.total_steps, completed=event.progress.step)
                    elif kind == "result":
                        result = event.result
        except errors.GenmeshError as error:
            fail(error)
        except KeyboardInterrupt:
            interrupted(job_id)
    if result is None:
        return
    for path, generated in zip(output_paths(output, len(result.images)), result.images, strict=True):
        path.write_bytes(generated.artifact.data)
        if not as_json:
            typer.echo(f"{path}  seed {generated.seed}  s3://{generated.artifact.bucket}/{generated.artifact.key}")
    if result.parameters.defaults_note and not as_json:  # the smoke-test model or a CPU: smaller than usual
        typer.echo(f"note: {result.parameters.defaults_note}", err=True)
