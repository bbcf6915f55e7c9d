"""genmesh pull / models rm / models prune: model files on the server (admin keys)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from genmesh import errors
from genmesh.cli.base import app
from genmesh.cli.common import JsonFlag, KeyOption, UrlOption, fail, to_dict
from genmesh.cli.jobs import models_app
from genmesh.client import GenmeshClient
from genmesh.client.requests import MODEL_KINDS
from genmesh.models.v1 import models_pb2

KIND_NAMES = {value: name for name, value in MODEL_KINDS.items()}


def pull_description(progress: models_pb2.PullProgress) -> str:
    """``download tiny.gguf 12.3 MB/s`` (the bar shows bytes and the ETA beside it)."""
    phase = models_pb2.PullPhase.Name(progress.phase).removeprefix("PULL_PHASE_").lower()
    speed = f" {progress.bytes_per_second / 1e6:.1f} MB/s" if progress.bytes_per_second else ""
    retries = f" ({progress.retries} retried)" if progress.retries else ""
    return f"{phase} {progress.file_name}{speed}{retries}".strip()


@app.command()
def pull(
    ref: Annotated[
        str,
        typer.Argument(
            help="https://host/path/file[#sha256=HEX], hf:org/repo/path/file[@revision] (a file), "
            "hf:org/repo[/folder][@revision] (a diffusers folder) or civitai:<id>."
        ),
    ],
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Pull even when no sha256 is known.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept a pickled .ckpt/.pt (it can run code when loaded).")
    ] = False,
    name: Annotated[str, typer.Option(help="Install under this name (default: the source's file name).")] = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Pull a model file into the folder its kind belongs in (GGUF: text; SD1.5/SDXL: image; motion
    modules: motion), verified by sha256, with a progress bar; prints where it landed. Ctrl-C cancels
    (the partial download is kept: pulling again resumes it)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    result = None
    job_id = ""
    with GenmeshClient(url, api_key) as client:
        try:
            events = client.models.stream_pull(ref, no_verify=no_verify, allow_pickle=allow_pickle, name=name)
            with Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                transient=True, disable=as_json,
            ) as bar:  # fmt: skip
                task = bar.add_task("queued", total=None)
                for event in events:
                    if not job_id:
                        job_id = event.job_id
                        if not as_json:
                            typer.echo(f"job {job_id}", err=True)
                    if as_json:
                        typer.echo(json.dumps(to_dict(event)))
                    kind = event.WhichOneof("event")
                    if kind == "pull_progress":
                        progress = event.pull_progress
                        bar.update(task, description=pull_description(progress))
                        if progress.bytes_total:
                            bar.update(task, total=progress.bytes_total, completed=progress.bytes_done)
                    elif kind == "result":
                        result = event.result
        except errors.GenmeshError as error:
            fail(error)
        except KeyboardInterrupt:
            typer.echo(f"cancelled job {job_id}" if job_id else "cancelled", err=True)
            raise typer.Exit(130) from None
    if result is None or as_json:
        return
    verified = f"sha256 {result.sha256} ({result.digest_source})" if result.verified else "NOT verified (--no-verify)"
    state = "already there" if result.already_present else f"{result.size_bytes / 1e6:.1f} MB"
    typer.echo(f"{result.path}\n{KIND_NAMES.get(result.kind, '?')} model {result.name!r}, {state}, {verified}")


@models_app.command("rm")
def models_rm(
    name: str,
    kind: Annotated[str, typer.Option(help="text, image or motion, when two kinds share the name.")] = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Delete an installed model file by name (admin keys)."""
    with GenmeshClient(url, api_key) as client:
        try:
            deleted = client.models.delete(name, kind=kind)
        except errors.GenmeshError as error:
            fail(error)
    typer.echo(f"deleted {deleted.path} ({deleted.size_bytes / 1e6:.1f} MB)")


@models_app.command("prune")
def models_prune(url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Remove partial downloads that no running pull is writing (admin keys)."""
    with GenmeshClient(url, api_key) as client:
        try:
            pruned = client.models.prune()
        except errors.GenmeshError as error:
            fail(error)
    typer.echo(f"removed {pruned.removed_files} partial downloads ({pruned.freed_bytes / 1e6:.1f} MB)")
