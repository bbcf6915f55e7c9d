"""``genmesh up``: the server side's command, offered by the ``genmesh`` CLI when the server
package is installed (entry point group ``genmesh.commands``), so the client never imports it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genmesh.local import DATA_DIR_ENV


def up(
    port: Annotated[int, typer.Option(help="Gateway port on 127.0.0.1.")] = 8080,
    services: Annotated[str, typer.Option(help="Comma-separated services to start (default: all implemented).")] = "",
    data_dir: Annotated[
        Path | None, typer.Option(envvar=DATA_DIR_ENV, help="Where state lives (default ~/.local/share/genmesh).")
    ] = None,
    replicas: Annotated[
        str,
        typer.Option(
            help="Processes per service, e.g. image=2,text=2 (default 1 each): the gateway balances them and any "
            "replica answers for any job. Replicas on one GPU share it: each holds its own copy of the model."
        ),
    ] = "",
) -> None:
    """Run the whole mesh locally: S3 server, services, Envoy. Ctrl-C stops everything."""
    from servers.mesh.launcher import LaunchOptions, run_mesh  # only when run: every command lists this one

    options = LaunchOptions.build(port=port, services=services, data_dir=data_dir, replicas=replicas)
    raise typer.Exit(run_mesh(options))
