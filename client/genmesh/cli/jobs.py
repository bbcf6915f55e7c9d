"""genmesh models / job get|cancel / up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from genmesh import errors
from genmesh.cli.base import app, job_app
from genmesh.cli.common import JsonFlag, KeyOption, UrlOption, fail, to_dict, usage_error
from genmesh.client import GenmeshClient
from genmesh.services import SERVICES, service_for_job


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
            kind = model.labels.get("kind")
            if kind in ("motion_adapter", "lora"):
                tag = "adapter" if kind == "motion_adapter" else f"lora {model.labels.get('family', '?')}"
                flags = ", ".join(filter(None, (tag, flags)))
            typer.echo(f"{service:8} {model.name:28} {model.size_bytes / 1e6:8.1f} MB  {flags:16} {model.description}")


def job_service(client: GenmeshClient, job_id: str) -> Any:
    """The client of the service that owns a job, by its id's prefix (``genmesh.services``)."""
    service = service_for_job(job_id)
    clients = {
        "text": client.text, "image": client.images, "video": client.videos, "training": client.training,
        "agent": client.agent,
    }  # fmt: skip
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


@job_app.command("watch")
def job_watch(job_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonFlag = False) -> None:
    """Follow a job by id (a detached one too): what it did so far, then live until it ends. Watching
    never cancels it. Text jobs print their text; other jobs, and --json, print one JSON event per line."""
    with GenmeshClient(url, api_key) as client:
        service = job_service(client, job_id)  # training jobs too (`genmesh train --attach` shows a table)
        text = service is client.text and not as_json
        try:
            for event in service.watch(job_id):
                kind = event.WhichOneof("event")
                if text and kind == "delta":
                    typer.echo(event.delta.text, nl=False)
                elif text and kind == "result":
                    typer.echo("")
                elif not text:
                    typer.echo(json.dumps(to_dict(event)))
        except errors.GenmeshError as error:
            if text:
                typer.echo("")
            fail(error)


@app.command()
def up(
    port: Annotated[int, typer.Option(help="Gateway port on 127.0.0.1.")] = 8080,
    services: Annotated[str, typer.Option(help="Comma-separated services to start (default: all implemented).")] = "",
    data_dir: Annotated[
        Path | None, typer.Option(envvar="GENMESH_DATA_DIR", help="Where state lives (default ~/.local/share/genmesh).")
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
    from servers.mesh.launcher import LaunchOptions, run_mesh

    options = LaunchOptions.build(port=port, services=services, data_dir=data_dir, replicas=replicas)
    raise typer.Exit(run_mesh(options))


if __name__ == "__main__":
    app()
