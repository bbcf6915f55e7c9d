"""``GET /v1/jobs``: one list of the caller's jobs across every service, newest first.

Each service answers ``ListJobs`` for its own jobs (memory for live ones, the object store for
finished ones, peers for other replicas'); this route merges their pages with the client's own
merge (``genmesh.client.jobs.JobMerge``), so a person, the console or a workflow tool makes one
call where the client library makes five. It answers in genmesh's REST shape (the transcoder's
``preserve_proto_field_names`` JSON and ``google.rpc.Status`` errors), not OpenAI's: it is
genmesh's own route, served here because only this process calls every service.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from genmesh.client import jobs
from genmesh.errors import GenmeshError, InvalidArgument, Unavailable
from servers.diffusion.params import Limit
from servers.web.errors import http_status
from servers.web.fields import Param
from servers.web.settings import LISTED, UPSTREAMS

PAGE_SIZE_DEFAULT = 50
# As the gateway's transcoder prints messages (deploy/envoy: preserve_proto_field_names, always_print_primitive_fields).
JSON_OPTIONS = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
PAGE_SIZE_MAX = 200
# The services whose jobs this route lists: those the front door calls. The models server is not one
# (pulls go to it directly): its jobs have their own list.
LISTABLE = tuple(name for name in jobs.LIST_REQUESTS if name in (*UPSTREAMS, *LISTED))
_TIME = {"type": "string", "format": "date-time"}
PARAMETERS = (
    Param("service", "string", f"Only these services' jobs ({', '.join(LISTABLE)}): repeat the parameter or "
          "separate them by commas; every service by default.",
          schema={"pattern": "^(" + "|".join(LISTABLE) + ")?(,(" + "|".join(LISTABLE) + ")?)*$"}),
    Param("state", "string", "Only jobs in this state.", choices=tuple(jobs.STATES)),
    Param("method", "string", "Only jobs of this RPC (GenerateImage...); needs exactly one service."),
    Param("created_after", "string", "Only jobs created after this RFC 3339 time (with its zone).", schema=_TIME),
    Param("created_before", "string", "Only jobs created before this RFC 3339 time (with its zone).", schema=_TIME),
    Param("all_clients", "boolean", "Every client's jobs: admin keys only."),
    Param("page_size", "integer", f"Jobs per page (default {PAGE_SIZE_DEFAULT}).", Limit(1, PAGE_SIZE_MAX)),
    Param("page_token", "string", "next_page_token of the previous page."),
)  # fmt: skip
PAGE = {
    "type": "object",
    "required": ["jobs", "next_page_token", "unavailable"],
    "properties": {
        "jobs": {"type": "array", "items": {"type": "object", "required": ["service", "status"], "properties": {
            "service": {"enum": list(LISTABLE)}, "status": {"type": "object"}}}},
        "next_page_token": {"type": "string"},
        "unavailable": {"type": "array", "items": {"type": "string"}},
    },
}  # fmt: skip
PARAMETER_NAMES = tuple(param.name for param in PARAMETERS)
_TRUE, _FALSE = ("true", "1"), ("false", "0", "")


def status_body(error: GenmeshError) -> tuple[int, dict]:
    """(HTTP status, ``google.rpc.Status`` JSON) of a genmesh error, with the field as a BadRequest detail."""
    body: dict[str, Any] = {"code": grpc.StatusCode[error.code].value[0], "message": error.message, "details": []}
    if error.field:
        body["details"].append({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": error.field, "description": error.message}],
        })  # fmt: skip
    return http_status(error.code), body


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{name} must be an RFC 3339 time such as 2026-12-07T10:00:00Z (got {raw!r})",
                              field=name) from None  # fmt: skip
    if stamp.tzinfo is None:
        raise InvalidArgument(f"{name} must name its time zone, e.g. a trailing Z (got {raw!r})", field=name)
    return stamp


def _flag(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name, "").lower()
    if raw not in (*_TRUE, *_FALSE):
        raise InvalidArgument(f"{name} must be true or false (got {raw!r})", field=name)
    return raw in _TRUE


def _page_size(query: Mapping[str, str]) -> int:
    raw = query.get("page_size", "")
    if not raw:
        return PAGE_SIZE_DEFAULT
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE_SIZE_MAX:
        raise InvalidArgument(f"page_size must be between 1 and {PAGE_SIZE_MAX} (got {raw!r})", field="page_size")
    return int(raw)


def services(values: Sequence[str], configured: Sequence[str]) -> list[str]:
    """The services asked (``service=image&service=video`` or ``service=image,video``); all by default."""
    asked = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(asked) - set(LISTABLE))
    if unknown:
        raise InvalidArgument(f"service must be one of {', '.join(LISTABLE)} (got {', '.join(unknown)})",
                              field="service")  # fmt: skip
    return asked or [name for name in LISTABLE if name in configured]


class JobsQuery:
    """The query string of ``GET /v1/jobs``, checked once."""

    def __init__(self, query: Mapping[str, str], service_values: Sequence[str], configured: Sequence[str]) -> None:
        unknown = sorted(set(query) - set(PARAMETER_NAMES))
        if unknown:
            known = ", ".join(PARAMETER_NAMES)
            raise InvalidArgument(f"{unknown[0]}: not a parameter of GET /v1/jobs (known: {known})", field=unknown[0])
        self.services = services(service_values, configured)
        self.explicit = bool(service_values)
        self.page_size = _page_size(query)
        self.page_token = query.get("page_token", "")
        self.method = query.get("method", "")
        if self.method and len(self.services) != 1:
            raise InvalidArgument("method needs exactly one service (service=image&method=GenerateImage)",
                                  field="method")  # fmt: skip
        self.filters = {
            "state": query.get("state") or None,
            "method": self.method,
            "created_after": _time(query, "created_after"),
            "created_before": _time(query, "created_before"),
            "all_clients": _flag(query, "all_clients"),
        }
        state = self.filters["state"]
        if state and state.lower() not in jobs.STATES:
            raise InvalidArgument(f"state must be one of {', '.join(jobs.STATES)} (got {state!r})", field="state")

    def merge(self) -> jobs.JobMerge:
        return jobs.JobMerge(self.services, self.page_size, self.page_token)

    def request(self, service: str, token: str) -> Any:
        return jobs.list_request(service, page_size=self.page_size, page_token=token, **self.filters)

    def skips(self, error: GenmeshError, merge: jobs.JobMerge) -> bool:
        """Whether a service that is down is left out of an all-services list (and named) rather than
        failing it; a service asked for by name fails the call."""
        return isinstance(error, Unavailable) and not self.explicit and len(merge.sources) > 1


def page_body(page: jobs.JobPage) -> dict:
    return {
        "jobs": [{"service": listed.service, **MessageToDict(listed.job, **JSON_OPTIONS)} for listed in page.jobs],
        "next_page_token": page.next_page_token,
        "unavailable": page.unavailable,
    }
