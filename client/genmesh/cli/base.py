"""The ``genmesh`` Typer app and its ``job`` group; the command modules register on them."""

from __future__ import annotations

import os
from typing import Annotated

import typer

app = typer.Typer(help="genmesh: a self-hosted generative-AI service mesh.", no_args_is_help=True)


@app.callback()
def connection(
    url: Annotated[
        str | None, typer.Option("--url", help="Gateway host:port for the command that follows (or GENMESH_URL).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="API key for the command that follows (or GENMESH_API_KEY).")
    ] = None,
) -> None:
    """Connection options before the command (`genmesh --url HOST:PORT text hi`) work as after it."""
    # Click parses the command's own options after this runs, so they read these as their defaults
    # (the command's own --url / --api-key still win).
    if url:
        os.environ["GENMESH_URL"] = url
    if api_key:
        os.environ["GENMESH_API_KEY"] = api_key


job_app = typer.Typer(help="Inspect and cancel jobs.", no_args_is_help=True)
app.add_typer(job_app, name="job")
