"""What every genmesh command shares: connection options, JSON output, one-line errors."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import typer
from google.protobuf import json_format

from genmesh import errors

UrlOption = Annotated[
    str | None, typer.Option("--url", envvar="GENMESH_URL", help="Gateway host:port (default 127.0.0.1:8080).")
]
KeyOption = Annotated[
    str | None, typer.Option("--api-key", envvar="GENMESH_API_KEY", help="API key for the gateway.", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON lines instead of text.")]


def to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


KEY_HINT = (
    "set GENMESH_API_KEY to the key `genmesh up` printed (also in ~/.local/share/genmesh/api-keys), or pass --api-key"
)


def fail(error: errors.GenmeshError) -> NoReturn:
    """One line for a failed call: the code, the server's message, and a hint where one helps."""
    message = error.message
    if isinstance(error, errors.Unauthenticated):
        message = f"{message}: {KEY_HINT}"
    typer.secho(f"error: {error.code}: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2 if isinstance(error, errors.InvalidArgument) else 1)


def usage_error(message: str) -> NoReturn:
    """A one-line error about the command line itself, found before anything is sent (exit 2)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


Seed = Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")]
Model = Annotated[str, typer.Option(help="Model name (see `genmesh models`); default: the server's.")]
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
