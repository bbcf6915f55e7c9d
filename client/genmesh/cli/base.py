"""The ``genmesh`` Typer app and its ``job`` group; the command modules register on them."""

from __future__ import annotations

import typer

app = typer.Typer(help="genmesh: a self-hosted generative-AI service mesh.", no_args_is_help=True)
job_app = typer.Typer(help="Inspect and cancel jobs.", no_args_is_help=True)
app.add_typer(job_app, name="job")
