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
from genmesh.cli.common import (
    JsonFlag,
    KeyOption,
    NotifyOption,
    Seed,
    UrlOption,
    counted,
    fail,
    interrupted,
    progress_bar,
    to_dict,
    usage_error,
)
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
        step, total = update.sub_progress.step, update.sub_progress.total_steps
        return f"{stage_name(update.stage)}: {counted(what, step, total)}"
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
    stages: Annotated[
        str, typer.Option(help="Comma-separated stages, in order (default text,image,video; image,video with --sheet).")
    ] = "",
    sheet: Annotated[
        Path | None,
        typer.Option(
            help="Start from this character sheet (JSON, e.g. a character.json written before): no text stage."
        ),
    ] = None,
    width: Annotated[int | None, typer.Option(help="Portrait width (and the video's), 64..2048.")] = None,
    height: Annotated[int | None, typer.Option(help="Portrait height (and the video's), 64..2048.")] = None,
    frames: Annotated[int | None, typer.Option(help="Video frames, 2..64 (default 16).")] = None,
    video_format: Annotated[str, typer.Option("--format", help="gif, mp4 or webp.")] = "gif",
    detach: Annotated[bool, typer.Option(help="Keep the job running if this command stops.")] = False,
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a character (sheet, portrait, animation) through the Agent service, with live progress.
    Writes character.json, portrait.png and video.<format> into --output-dir. Ctrl-C cancels the job
    (unless --detach) and still writes what the finished stages made."""
    chosen = [name.strip() for name in stages.split(",") if name.strip()]
    given = None
    if sheet is not None:
        try:
            given = json.loads(sheet.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            usage_error(f"--sheet: cannot read a JSON sheet from {sheet}: {exc}")
        if not isinstance(given, dict):
            usage_error(f"--sheet: {sheet} must hold a JSON object (name, appearance_prompt, ...)")
        chosen = chosen or ["image", "video"]
    unknown = [name for name in chosen if name not in AGENT_STAGES]
    if unknown:
        usage_error(f"--stages: choose from {', '.join(AGENT_STAGES)} (got {', '.join(unknown)})")
    if video_format not in VIDEO_FORMATS:
        usage_error(f"--format: choose from {', '.join(VIDEO_FORMATS)} (got {video_format!r})")
    image = {name: value for name, value in {"width": width, "height": height}.items() if value is not None}
    video: dict[str, Any] = {"output_format": video_format}
    if frames is not None:
        video["num_frames"] = frames
    result, job_id = None, ""
    finished: list[Any] = []  # the stage_result events so far: written on Ctrl-C too
    with GenmeshClient(url, api_key) as client:
        events = client.agent.stream_create_character(
            idea,
            style=style,
            seed=seed,
            steps=steps,
            stages=chosen,
            image=image,
            video=video,
            detach=detach,
            sheet=given,
            notify_url=notify_url,
        )
        try:
            with progress_bar(disable=as_json) as bar:
                task = bar.add_task("queued", total=None)
                for event in events:
                    kind = event.WhichOneof("event")
                    if not job_id:
                        job_id = event.job_id
                        if not as_json:
                            typer.echo(f"job {job_id}", err=True)
                    if kind == "result":
                        result = event.result
                    elif kind == "stage_result":  # kept before it is shown: a Ctrl-C then still writes it
                        finished.append(event.stage_result)
                    if as_json:
                        typer.echo(json.dumps(to_dict(event)))
                    if kind not in ("queued", "result"):
                        bar.update(task, description=character_progress_text(event))
                    if event.progress.total_steps:
                        bar.update(task, total=event.progress.total_steps, completed=event.progress.step)
        except errors.GenmeshError as error:
            fail(error)
        except KeyboardInterrupt:
            events.close()  # cancels the job unless it is detached
            for path in write_stages(output_dir, finished):
                typer.echo(f"  {path} (finished before the interruption)", err=True)
            interrupted(job_id, detached=detach)
    if result is None:
        return
    written = write_files(output_dir, result.sheet, (result.portrait, result.video))
    if not as_json:
        stored = [artifact.key for artifact in (result.sheet_artifact, result.portrait, result.video) if artifact.key]
        folder = f"{stored[0].rsplit('/', 1)[0]}/" if stored else result.record.key  # the job's folder
        typer.echo(f"{result.sheet.name or 'character'}  seed {result.parameters.seed}  s3://outputs/{folder}")
        for path in written:
            typer.echo(f"  {path}")


def write_stages(output_dir: Path, finished: list[agent_pb2.StageResult]) -> list[Path]:
    """What finished stages made (the sheet, the portrait...), as the whole job would have written it."""
    sheets = [stage.sheet for stage in finished if stage.stage == agent_pb2.STAGE_TEXT]
    artifacts = [stage.artifact for stage in finished if stage.stage != agent_pb2.STAGE_TEXT]
    return write_files(output_dir, sheets[-1] if sheets else None, artifacts)


def write_files(output_dir: Path, sheet: agent_pb2.CharacterSheet | None, artifacts: Any) -> list[Path]:
    """character.json from the sheet, and each stored artifact by its presigned URL."""
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if sheet is not None and sheet.name:
        path = output_dir / "character.json"
        # Every field, empty ones too: the same shape as the character.json the mesh stores.
        fields = {field.name: getattr(sheet, field.name) for field in sheet.DESCRIPTOR.fields}
        path.write_text(json.dumps(fields, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    for artifact in artifacts:
        if artifact.key:
            path = output_dir / artifact.key.rsplit("/", 1)[-1]
            with urllib.request.urlopen(artifact.url, timeout=60) as response:
                path.write_bytes(response.read())
            written.append(path)
    return written
