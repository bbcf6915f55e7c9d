"""genmesh character: the Agent service's CreateCharacter (sheet, portrait, animation) with live progress."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from genmesh import errors
from genmesh.agent.v1 import agent_pb2
from genmesh.cli.base import app
from genmesh.cli.common import JsonFlag, KeyOption, Seed, UrlOption, fail, to_dict, usage_error
from genmesh.client import GenmeshClient
from genmesh.client.requests import AGENT_STAGES, VIDEO_FORMATS


def stage_name(value: int) -> str:
    known = agent_pb2.Stage.DESCRIPTOR.values_by_number.get(value)
    return known.name.removeprefix("STAGE_").lower() if known is not None else str(value)


def character_progress_text(event: agent_pb2.CreateCharacterResponse) -> str:
    """What a stage event says, for the live display: "video: denoising step 3/25"..."""
    kind = event.WhichOneof("event")
    if kind == "stage_started":
        return f"{stage_name(event.stage_started.stage)}: started ({event.stage_started.sub_job_id})"
    if kind == "stage_progress":
        update = event.stage_progress
        what = update.sub_stage.removeprefix("STAGE_").lower().replace("_", " ") or "writing"
        return f"{stage_name(update.stage)}: {what} {update.sub_progress.step}/{update.sub_progress.total_steps}"
    if kind == "stage_result":
        return f"{stage_name(event.stage_result.stage)}: done"
    return kind or ""


@app.command()
def character(
    idea: Annotated[str, typer.Argument(help="The character idea, in free text.")],
    output_dir: Annotated[Path, typer.Option("-o", "--output-dir", help="Where to write the files.")] = Path("."),
    style: Annotated[str, typer.Option(help="A visual style for the portrait, e.g. 'oil painting'.")] = "",
    seed: Seed = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps of the image and video stages, 1..150.")] = None,
    stages: Annotated[str, typer.Option(help="Comma-separated stages, in order (default text,image,video).")] = "",
    width: Annotated[int | None, typer.Option(help="Portrait width (and the video's), 64..2048.")] = None,
    height: Annotated[int | None, typer.Option(help="Portrait height (and the video's), 64..2048.")] = None,
    frames: Annotated[int | None, typer.Option(help="Video frames, 2..64 (default 16).")] = None,
    video_format: Annotated[str, typer.Option("--format", help="gif, mp4 or webp.")] = "gif",
    detach: Annotated[bool, typer.Option(help="Keep the job running if this command stops.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a character (sheet, portrait, animation) through the Agent service, with live progress.
    Writes character.json, portrait.png and video.<format> into --output-dir."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    chosen = [name.strip() for name in stages.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in AGENT_STAGES]
    if unknown:
        usage_error(f"--stages: choose from {', '.join(AGENT_STAGES)} (got {', '.join(unknown)})")
    if video_format not in VIDEO_FORMATS:
        usage_error(f"--format: choose from {', '.join(VIDEO_FORMATS)} (got {video_format!r})")
    image = {name: value for name, value in {"width": width, "height": height}.items() if value is not None}
    video: dict[str, Any] = {"output_format": video_format}
    if frames is not None:
        video["num_frames"] = frames
    result = None
    with GenmeshClient(url, api_key) as client:
        try:
            events = client.agent.stream_create_character(
                idea, style=style, seed=seed, steps=steps, stages=chosen, image=image, video=video, detach=detach
            )
            with Progress(
                TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True,
                disable=as_json,
            ) as bar:  # fmt: skip
                task = bar.add_task("queued", total=None)
                for event in events:
                    if as_json:
                        typer.echo(json.dumps(to_dict(event)))
                    if event.WhichOneof("event") == "result":
                        result = event.result
                    elif event.WhichOneof("event") != "queued":
                        bar.update(task, description=character_progress_text(event))
                    if event.progress.total_steps:
                        bar.update(task, total=event.progress.total_steps, completed=event.progress.step)
        except errors.GenmeshError as error:
            fail(error)
    if result is None:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if result.sheet.name:
        path = output_dir / "character.json"
        path.write_text(json.dumps(to_dict(result.sheet), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    for artifact in (result.portrait, result.video):
        if artifact.key:  # fetched by their presigned URLs
            path = output_dir / artifact.key.rsplit("/", 1)[-1]
            with urllib.request.urlopen(artifact.url, timeout=60) as response:
                path.write_bytes(response.read())
            written.append(path)
    if not as_json:
        typer.echo(f"{result.sheet.name or 'character'}  seed {result.parameters.seed}  s3://outputs/"
                   f"{result.record.key.rsplit('/', 1)[0]}/")  # fmt: skip
        for path in written:
            typer.echo(f"  {path}")
