"""genmesh text / chat."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genmesh import errors
from genmesh.cli.base import app
from genmesh.cli.common import (
    JsonFlag,
    KeyOption,
    Model,
    NotifyOption,
    Seed,
    UrlOption,
    fail,
    interrupted,
    to_dict,
)
from genmesh.client import GenmeshClient


def load_schema(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    path = Path(value)
    text = path.read_text() if path.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--json-schema is neither a JSON file nor valid JSON: {exc}") from None


def print_stream(events: Any, as_json: bool) -> Any:
    """Print deltas as they arrive (or every event as JSON); return the result message."""
    result, job_id = None, ""
    try:
        for event in events:
            job_id = job_id or event.job_id
            kind = event.WhichOneof("event")
            if as_json:
                typer.echo(json.dumps(to_dict(event)))
            elif kind == "delta":
                sys.stdout.write(event.delta.text)
                sys.stdout.flush()
            if kind == "result":
                result = event.result
    except KeyboardInterrupt:
        typer.echo("", err=True)  # end the streamed text's line
        interrupted(job_id)
    if not as_json and result is not None:
        sys.stdout.write("\n")
        timings = result.timings
        typer.secho(
            f"[{job_id} | {result.model} | {result.usage.completion_tokens} tokens | "
            f"first token {timings.time_to_first_token_ms:.0f} ms | {timings.tokens_per_second:.1f} tok/s | "
            + (
                f"saved s3://{result.record.bucket}/{result.record.key}]" if result.HasField("record") else "not saved]"
            ),
            err=True,
            dim=True,
        )
    return result


SamplingArgs = dict[str, Any]


def sampling_args(
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    seed: int | None,
    stop: list[str] | None,
    json_schema: str | None,
    json_mode: bool,
    model: str,
) -> SamplingArgs:
    return {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "stop": stop or (),
        "json_schema": load_schema(json_schema),
        "json": json_mode,
        "model": model,
    }


MaxTokens = Annotated[int | None, typer.Option(help="Most tokens to generate (1..32768; default 256).")]
Temperature = Annotated[float | None, typer.Option(help="0 = greedy, up to 2 (default 0.8).")]
TopP = Annotated[float | None, typer.Option(help="Nucleus sampling mass (0, 1].")]
TopK = Annotated[int | None, typer.Option(help="Top-k sampling, 0 disables.")]
Stop = Annotated[list[str] | None, typer.Option(help="Stop sequence (repeatable).")]
Schema = Annotated[
    str | None, typer.Option("--json-schema", help="Constrain output to this JSON schema (file or JSON).")
]
JsonMode = Annotated[bool, typer.Option("--json-output", help="Constrain output to valid JSON.")]


@app.command()
def text(
    prompt: Annotated[str, typer.Argument(help="The prompt ('-' reads standard input).")],
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    seed: Seed = None,
    stop: Stop = None,
    json_schema: Schema = None,
    json_output: JsonMode = False,
    model: Model = "",
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Complete a prompt, printing tokens as they stream."""
    if prompt == "-":
        prompt = sys.stdin.read()
    options = sampling_args(max_tokens, temperature, top_p, top_k, seed, stop, json_schema, json_output, model)
    options["notify_url"] = notify_url
    with GenmeshClient(url, api_key) as client:
        try:
            print_stream(client.text.stream_generate(prompt, **options), as_json)
        except errors.GenmeshError as error:
            fail(error)


@app.command()
def chat(
    message: Annotated[str | None, typer.Argument(help="One user message; omit for an interactive chat.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message to start with.")] = None,
    max_tokens: MaxTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    seed: Seed = None,
    stop: Stop = None,
    json_schema: Schema = None,
    json_output: JsonMode = False,
    model: Model = "",
    notify_url: NotifyOption = "",
    url: UrlOption = None,
    api_key: KeyOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Chat with the model's chat template; interactive when no message is given (Ctrl-D ends)."""
    options = sampling_args(max_tokens, temperature, top_p, top_k, seed, stop, json_schema, json_output, model)
    options["notify_url"] = notify_url
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    interactive = message is None
    with GenmeshClient(url, api_key) as client:
        while True:
            if interactive:
                try:
                    message = input("you> ")
                except EOFError:
                    typer.echo()
                    return
                if not message.strip():
                    continue
            history.append({"role": "user", "content": message or ""})
            try:
                result = print_stream(client.text.stream_chat(history, **options), as_json)
            except errors.GenmeshError as error:
                if not interactive:
                    fail(error)
                typer.secho(f"error: {error.code}: {error.message}", err=True, fg=typer.colors.RED)
                history.pop()
                continue
            if not interactive:
                return
            history.append({"role": "assistant", "content": result.text if result else ""})
