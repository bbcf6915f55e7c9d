"""What every genmesh command shares: connection options, JSON output, one-line errors."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from google.protobuf import json_format

from genmesh import errors
from genmesh.local import DATA_DIR_ENV, DEFAULT_DATA_DIR, KEYS_FILE

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="GENMESH_URL", help="Gateway host:port (default 127.0.0.1:8080).")
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="GENMESH_API_KEY", help="API key for the gateway.", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON lines instead of text.")]


def to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def key_hint(environ: Mapping[str, str] = os.environ) -> str:
    """Where the key is: the keys file `genmesh up` reads (GENMESH_API_KEYS_FILE, else the api-keys
    file of the data folder in use, GENMESH_DATA_DIR / --data-dir)."""
    keys_file = environ.get("GENMESH_API_KEYS_FILE") or str(
        Path(environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser() / KEYS_FILE
    )
    return (
        f"set GENMESH_API_KEY to the key `genmesh up` printed (also in {keys_file}; a mesh started with "
        f"another --data-dir keeps it in that folder's {KEYS_FILE}), or pass --api-key"
    )


# API fields whose CLI parameter has another name (the flags themselves are read from the command's
# own definitions): tried in order, then the field's own name. An error naming a field names the
# flag the user typed too.
API_FIELD_PARAMS: dict[str, tuple[str, ...]] = {
    "num_frames": ("frames",),
    "guidance_scale": ("guidance", "guidance_scale"),
    "degradation_type": ("preset",),
    "content_kinds": ("kind",),
    "num_epochs": ("epochs",),
    "mask_image": ("mask",),
    "image_data": ("image", "init_image"),
    "image_ref": ("image",),
    "init_image_ref": ("init_image",),
    "init_video_ref": ("init_video",),
    "output_format": ("output", "video_format"),
    "prompt_schedule": ("prompt_at",),
    "loras": ("lora",),
    "model_id": ("model",),
}


def current_command() -> Any:
    """The command running now (its parameters are the flags the user could type), or None."""
    try:
        from typer._click.globals import get_current_context  # typer vendors click
    except ImportError:  # typer releases that use click itself
        from click import get_current_context
    context = get_current_context(silent=True)
    return context.command if context is not None else None


def flag_for(field: str | None, command: Any) -> str | None:
    """The option or argument of ``command`` that sets the API ``field`` (``video.num_frames`` ->
    ``--frames``), or None."""
    if not field or command is None:
        return None
    params = {param.name: param for param in command.params}
    names = reversed(re.sub(r"\[[0-9]+\]", "", field).split("."))  # the innermost first: sheet.name -> --sheet
    for candidate in (param for name in names for param in (*API_FIELD_PARAMS.get(name, ()), name)):
        param = params.get(candidate)
        if param is not None and param.param_type_name == "option":
            return max(param.opts, key=len)  # the long form
        if param is not None and param.param_type_name == "argument":
            return param.name.upper()  # as --help shows it
    return None


def fail(error: errors.GenmeshError) -> NoReturn:
    """One line for a failed call: the code, the server's message (led by the flag that set the
    field it names), and a hint where one helps."""
    message = error.message
    flag = flag_for(error.field, current_command())
    if flag is not None:
        # "model: unknown model" reads "--model: unknown model", not "--model: model: unknown model".
        for name in {error.field or "", (error.field or "").rsplit(".", 1)[-1]}:
            if name and message.startswith(f"{name}: "):
                message = message.removeprefix(f"{name}: ")
                break
        message = f"{flag}: {message}"
    if isinstance(error, errors.Unauthenticated):
        message = f"{message}: {key_hint()}"
    typer.secho(f"error: {error.code}: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2 if isinstance(error, errors.InvalidArgument) else 1)


def interrupted(job_id: str, *, detached: bool = False) -> NoReturn:
    """Ctrl-C during a job's stream, alike for every command: leaving the stream cancels the job
    (the server cancels a job whose client went away), unless it runs detached. Exit 130."""
    if detached and job_id:
        typer.echo(f"stopped watching; job {job_id} goes on (genmesh job watch {job_id})", err=True)
    else:
        typer.echo(f"cancelled job {job_id}" if job_id else "cancelled (before the job was queued)", err=True)
    raise typer.Exit(130)


def counted(label: str, step: int, total: int) -> str:
    """``label step/total`` once the total is known; until then only the label (never ``0/0``)."""
    return f"{label} {step}/{total}" if total else label


def progress_bar(*, disable: bool, console: Any = None, elapsed: bool = False) -> Any:
    """The live bar every command shows: what is happening, a bar, ``done/total`` ("waiting" until
    the total is known), and the time left (or elapsed)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class CountColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{int(task.completed)}/{int(task.total)}" if task.total else "waiting")

    clock = TimeElapsedColumn() if elapsed else TimeRemainingColumn()
    console = console or Console(stderr=True)  # progress is not the result: stdout stays clean
    return Progress(
        TextColumn("{task.description}"), BarColumn(), CountColumn(), clock, transient=True, console=console,
        disable=disable or not console.is_terminal,  # piped or captured output stays plain lines
    )  # fmt: skip


def usage_error(message: str) -> NoReturn:
    """A one-line error about the command line itself, found before anything is sent (exit 2)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


Seed = Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")]
Model = Annotated[str, typer.Option(help="Model name (see `genmesh models`); default: the server's.")]
NotifyOption = Annotated[
    str,
    typer.Option(
        "--notify-url",
        help="A webhook: the finished job is POSTed here, signed with the key's secret. The operator must allow "
        "the address (GENMESH_WEBHOOK_ALLOW); default: the key's notify= URL, if any.",
    ),
]
LoraOption = Annotated[
    list[str] | None,
    typer.Option(
        "--lora",
        help="A LoRA to apply: NAME or NAME:WEIGHT (weight -2..2, default 1; see `genmesh models`); repeatable. "
        "<lora:NAME:WEIGHT> in the prompt works too.",
    ),
]


def lora_option(values: list[str] | None) -> list[tuple[str, float]]:
    """``--lora NAME[:WEIGHT]`` values -> (name, weight) pairs; a weight that is not a number is a usage error."""
    pairs = []
    for value in values or []:
        name, _, weight = value.rpartition(":") if ":" in value else (value, "", "1")
        try:
            pairs.append((name, float(weight)))
        except ValueError:
            usage_error(f"--lora must be NAME or NAME:WEIGHT with a number for WEIGHT (got {value!r})")
    return pairs
