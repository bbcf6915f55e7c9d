"""genmesh call SERVICE RPC [JSON]: any RPC of any declared service, by name, with a JSON request.

Every declared service (``genmesh.services``) is reachable this way, one without commands of its
own too; the request is the RPC's message in the proto's JSON form, the answer one JSON line per
event (or the response).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from google.protobuf import json_format

from genmesh import errors
from genmesh.cli.base import app
from genmesh.cli.common import KeyOption, UrlOption, fail, to_dict, usage_error
from genmesh.client import GenmeshClient
from genmesh.client.service_rpcs import service_rpcs
from genmesh.services import BY_NAME, NAMES


@app.command("call")
def call(
    service: Annotated[str, typer.Argument(help="One of: " + ", ".join(NAMES) + ".")],
    rpc: Annotated[str, typer.Argument(help="The RPC's name, e.g. GetJob (grpcurl ... list SERVICE shows them).")],
    request: Annotated[str, typer.Argument(help="The request as JSON (proto field names).")] = "{}",
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Call any RPC of a service with a JSON request; print the response (or each event) as JSON."""
    if service not in BY_NAME:
        usage_error(f"SERVICE must be one of {', '.join(NAMES)} (got {service!r})")
    rpcs = service_rpcs(service)
    if rpc not in rpcs.requests:
        usage_error(f"RPC must be one of {', '.join(sorted(rpcs.requests))} (got {rpc!r})")
    try:
        message = json_format.Parse(request, rpcs.requests[rpc]())
    except json_format.ParseError as exc:
        usage_error(f"REQUEST is not a {rpcs.requests[rpc].DESCRIPTOR.name} in JSON: {' '.join(str(exc).split())}")
    with GenmeshClient(url, api_key) as client:
        try:
            answer = client.service(service).call(rpc, message)
            for event in answer if rpc in rpcs.streams else (answer,):
                typer.echo(json.dumps(to_dict(event)))
        except errors.GenmeshError as error:
            fail(error)
