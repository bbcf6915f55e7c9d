"""genmesh models / jobs / job get|cancel|watch / outputs [rm] / up."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from genmesh import errors
from genmesh.cli.base import app, job_app
from genmesh.cli.common import JsonFlag, KeyOption, UrlOption, fail, to_dict, usage_error
from genmesh.client import GenmeshClient
from genmesh.client.jobs import LIST_REQUESTS, OUTPUT_KINDS, STATES, ListedJob
from genmesh.client.parameters import typed_parameters
from genmesh.common.v1 import model_pb2
from genmesh.services import SERVICES, service_for_job

models_app = typer.Typer(help="The models each service can run: list them, delete one, prune partial pulls.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonFlag = False) -> None:
    """List the models each service can run."""
    if ctx.invoked_subcommand is not None:
        return
    listed: list[tuple[str, Any]] = []
    with GenmeshClient(url, api_key) as client:
        # Every declared service whose client lists models (the agent and the models server do not).
        services = [(info.name, client.service(info.name)) for info in SERVICES]
        for service, sub in ((name, sub) for name, sub in services if hasattr(sub, "list_models")):
            try:
                listed.extend((service, model) for model in sub.list_models())
            except errors.Unavailable:
                continue  # that service is not running
            except errors.GenmeshError as error:
                fail(error)
    if as_json:
        for service, model in listed:
            typer.echo(json.dumps({"service": service, **to_dict(model)}))
        return
    rows: list[tuple[str, ...]] = []
    for service, model in listed:
        if service == "training":
            delta = f"{model.delta_vs_previous.psnr:+.2f} dB vs previous" if model.previous_model_id else "first"
            size = f"v{model.version}"
            rows.append((service, model.model_id, size, "-", f"PSNR {model.metrics.psnr:.2f}", delta))
            continue
        flags = "default" if model.is_default else ""
        kind = model.labels.get("kind")
        if kind in ("motion_adapter", "lora"):
            tag = "adapter" if kind == "motion_adapter" else f"lora {model.labels.get('family', '?')}"
            flags = ", ".join(filter(None, (tag, flags)))
        size = f"{model.size_bytes / 1e6:.1f} MB"
        rows.append((service, model.name, size, model_state_text(model), flags or "-", model.description))
    header = ("SERVICE", "NAME", "SIZE", "STATE", "FLAGS", "DESCRIPTION")
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(5)]
    for row in (header, *rows) if rows else ():
        cells = [cell.rjust(width) if column == 2 else cell.ljust(width) for column, (cell, width) in
                 enumerate(zip(row[:5], widths, strict=True))]  # fmt: skip
        typer.echo("  ".join([*cells, row[5]]).rstrip())


MODEL_STATES = {
    model_pb2.MODEL_STATE_LOADED: "loaded",
    model_pb2.MODEL_STATE_LOADS_ON_FIRST_USE: "loads on first use",
    model_pb2.MODEL_STATE_NOT_DOWNLOADED: "not downloaded",
}


def model_state_text(model: model_pb2.ModelInfo) -> str:
    """A model's state as `genmesh models` shows it (a server older than the field tells ``loaded`` only)."""
    return MODEL_STATES.get(model.state) or ("loaded" if model.loaded else "not loaded")


STATE_NAMES = {number: name for name, number in STATES.items()}


def age(seconds: float) -> str:
    """A short age: 42s, 5m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def job_row(listed: ListedJob, now: float) -> str:
    status = listed.status
    state = STATE_NAMES.get(status.state, "?")
    if state == "queued":
        progress = f"#{status.queue_position}"
    elif status.HasField("progress") and status.progress.total_steps:
        progress = f"{status.progress.fraction * 100:3.0f}%"
    else:
        progress = "-"
    created = status.create_time.ToMilliseconds() / 1000
    method = status.method.rpartition("/")[2]
    return f"{status.job_id:36} {listed.service:8} {method:22} {state:9} {progress:>8} {age(now - created):>5}"


@app.command("jobs")
def list_jobs(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state: " + ", ".join(STATES) + ".")] = None,
    service: Annotated[
        list[str] | None, typer.Option(help="Only this service's jobs (repeatable): " + ", ".join(LIST_REQUESTS) + ".")
    ] = None,
    all_clients: Annotated[bool, typer.Option("--all", help="Every client's jobs (admin keys only).")] = False,
    limit: Annotated[int, typer.Option(help="Most jobs to show, 1..200.")] = 20,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List jobs across services, newest first: id, service, method, state, progress (queue
    position while queued), age. Your own key's jobs unless --all."""
    if state is not None and state.lower() not in STATES:
        usage_error(f"--state must be one of {', '.join(STATES)} (got {state!r})")
    unknown = sorted(set(service or ()) - set(LIST_REQUESTS))
    if unknown:
        usage_error(f"--service: unknown {', '.join(unknown)} (one of {', '.join(LIST_REQUESTS)})")
    if not 1 <= limit <= 200:
        usage_error(f"--limit must be between 1 and 200 (got {limit})")
    with GenmeshClient(url, api_key) as client:
        try:
            page = client.list_jobs(services=service or None, page_size=limit, state=state, all_clients=all_clients)
        except errors.GenmeshError as error:
            fail(error)
    now = time.time()
    if as_json:
        for listed in page.jobs:
            typer.echo(json.dumps({"service": listed.service, **to_dict(listed.job)}))
        return
    typer.echo(f"{'ID':36} {'SERVICE':8} {'METHOD':22} {'STATE':9} {'PROGRESS':>8} {'AGE':>5}")
    for listed in page.jobs:
        typer.echo(job_row(listed, now))
    if page.unavailable:
        typer.echo(f"(not running, not listed: {', '.join(page.unavailable)})", err=True)
    if page.next_page_token:
        typer.echo("(more jobs: raise --limit, or page with the Python client's list_jobs)", err=True)


outputs_app = typer.Typer(help="The library of outputs: list them newest first, or delete one job's.")
app.add_typer(outputs_app, name="outputs")
KIND_NAMES = {number: name for name, number in OUTPUT_KINDS.items()}


@outputs_app.callback(invoke_without_command=True)
def outputs(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Only this kind: " + ", ".join(OUTPUT_KINDS) + ".")] = None,
    limit: Annotated[int, typer.Option(help="Most outputs to show, 1..200.")] = 20,
    all_clients: Annotated[bool, typer.Option("--all", help="Every client's outputs (admin keys only).")] = False,
    sub_jobs: Annotated[
        bool,
        typer.Option(
            "--sub-jobs",
            help="Also the outputs of sub-jobs (a character's portrait and animation as their jobs made them).",
        ),
    ] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List stored outputs, newest first: job id, kind, age, thumbnail or first file, parameters.
    A character is one output (its portrait as the file); its stages' sub-jobs only with --sub-jobs,
    each marked with the job it belongs to."""
    if ctx.invoked_subcommand is not None:
        return
    if kind is not None and kind not in OUTPUT_KINDS:
        usage_error(f"--kind must be one of {', '.join(OUTPUT_KINDS)} (got {kind!r})")
    if not 1 <= limit <= 200:
        usage_error(f"--limit must be between 1 and 200 (got {limit})")
    with GenmeshClient(url, api_key) as client:
        try:
            listed = client.outputs.list(kind=kind, page_size=limit, all_clients=all_clients, include_sub_jobs=sub_jobs)
        except errors.GenmeshError as error:
            fail(error)
    now = time.time()
    if listed.outputs and not as_json:
        typer.echo(f"{'ID':36} {'KIND':14} {'AGE':>5}  {'FILE'}  PARAMETERS")
    for output in listed.outputs:
        if as_json:
            typer.echo(json.dumps(to_dict(output)))
            continue
        shown = (
            output.thumbnail if output.HasField("thumbnail") else (output.artifacts[0] if output.artifacts else None)
        )
        where = f"{shown.bucket}/{shown.key}" if shown is not None else output.folder
        parameters = parameter_text(typed_parameters(output.method, output.parameters))
        created = output.create_time.ToMilliseconds() / 1000
        kind_name = KIND_NAMES.get(output.kind, "?")
        if output.parent_job_id:
            where = f"{where}  (sub-job of {output.parent_job_id})"
        typer.echo(f"{output.job_id:36} {kind_name:14} {age(now - created):>5}  {where}  {parameters}")


PARAMETERS_WIDTH = 160  # characters of an output's parameters on its line (a prompt can be long)


def parameter_text(parameters: dict[str, Any], width: int = PARAMETERS_WIDTH) -> str:
    """``name=value`` pairs as people read them: numbers as numbers (``seed=42``), text quoted when it
    has spaces, nested values as compact JSON; empty ones left out; cut at ``width`` with "…"."""

    def shown(value: Any) -> str:
        if isinstance(value, str):
            return json.dumps(value) if not value or any(c.isspace() or c in '"=' for c in value) else value
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    text = " ".join(f"{name}={shown(value)}" for name, value in parameters.items() if value not in ("", [], {}, None))
    return text if len(text) <= width else text[: width - 1] + "…"


@outputs_app.command("rm")
def outputs_rm(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Delete one job's stored outputs (its whole folder); its record says so."""
    with GenmeshClient(url, api_key) as client:
        try:
            deleted = client.outputs.delete(job_id)
        except errors.GenmeshError as error:
            fail(error)
    typer.echo(f"deleted {deleted.deleted_objects} objects of {job_id}")


def job_service(client: GenmeshClient, job_id: str) -> Any:
    """The client of the service that owns a job, by its id's prefix (``genmesh.services``)."""
    service = service_for_job(job_id)
    if service is None:
        prefixes = ", ".join(f"{prefix}-" for info in SERVICES for prefix in info.job_prefixes)
        usage_error(f"job id {job_id!r} does not start with a known prefix ({prefixes})")
    return client.service(service.name)


@job_app.command("get")
def job_get(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Show a job's status and result as JSON."""
    with GenmeshClient(url, api_key) as client:
        try:
            typer.echo(json.dumps(to_dict(job_service(client, job_id).get_job(job_id)), indent=2))
        except errors.GenmeshError as error:
            fail(error)


TERMINAL_STATES = {STATES[name] for name in ("succeeded", "failed", "cancelled")}
CANCEL_WAIT_SECONDS = 60.0  # a running job stops at its next step; training at its next batch


def job_state(job: Any) -> int:
    """The state of any service's job message (a TrainingJob has it at the top level)."""
    return job.status.state if hasattr(job, "status") else job.state


@job_app.command("cancel")
def job_cancel(job_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel a queued or running job; print it once it has stopped (a running job stops at its next
    step), or say it is still cancelling."""
    with GenmeshClient(url, api_key) as client:
        service = job_service(client, job_id)
        try:
            job = service.cancel_job(job_id)
            if job_state(job) not in TERMINAL_STATES:
                typer.echo(f"cancelling job {job_id}...", err=True)
                try:
                    for _ in service.watch(job_id, timeout=CANCEL_WAIT_SECONDS):  # ends with the job
                        pass
                except errors.DeadlineExceeded:
                    typer.echo(f"job {job_id} is still cancelling; `genmesh job get {job_id}` shows it", err=True)
                except errors.GenmeshError:
                    pass  # the job's stream ends with its own status: CANCELLED (or a failure meanwhile)
                job = service.get_job(job_id)
        except errors.GenmeshError as error:
            fail(error)
    typer.echo(json.dumps(to_dict(job), indent=2))


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


if __name__ == "__main__":
    app()
