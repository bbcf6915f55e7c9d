"""The ``genmesh`` command line: use the mesh (and run it locally, where the servers are installed).

One module per area (``text``, ``image``, ``video``, ``training``, ``character``, ``jobs``: models, jobs;
``models``: pull, models rm|prune; ``call``: any RPC of any declared service),
sharing ``common`` (connection options, one-line errors); importing this package registers them all
on ``app`` in the order ``genmesh --help`` shows them. Commands of other installed packages come from
the ``genmesh.commands`` entry points (the server package's ``up``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import typer

from genmesh.cli.base import app

# Registers the commands, in this order.
for _module in ("text", "image", "video", "training", "character", "jobs", "models", "call"):
    importlib.import_module(f"genmesh.cli.{_module}")
for _command in entry_points(group="genmesh.commands"):
    app.command(_command.name)(_command.load())

from genmesh.cli.jobs import job_service  # noqa: E402
from genmesh.cli.video import video_progress_text  # noqa: E402

__all__ = ["app", "job_service", "main", "video_progress_text"]


def main() -> None:
    """The ``genmesh`` entry point: the app, with mistakes in arguments (a bad name, an unreadable
    or unwritable path) reported as one line and exit code 2, never a traceback."""
    try:
        app()
    except (ValueError, OSError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise SystemExit(2) from None
