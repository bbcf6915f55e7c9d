"""One list of jobs across services: every service's ListJobs, merged newest first.

No service holds the others' jobs, so the merge happens in the caller (the sync and async clients
share this code; so can an HTTP front door that serves one list to browsers). Each service is
paged with its own ``next_page_token``; the merged ``next_page_token`` holds, per service, the token
of the page its last listed job came from and how many jobs of that page were listed, so the next
merged page resumes exactly there (jobs created since sort before it and never shift it).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from genmesh import errors
from genmesh.client.service_rpcs import job_services, service_rpcs
from genmesh.common.v1 import job_pb2
from genmesh.library.v1 import library_pb2

# Each service's ListJobsRequest, for every declared service with jobs (``service_rpcs``).
LIST_REQUESTS: dict[str, type] = {name: service_rpcs(name).requests["ListJobs"] for name in job_services()}
STATES = {"queued": 1, "running": 2, "succeeded": 3, "failed": 4, "cancelled": 5}


def _timestamp(value: datetime | float | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int((value.timestamp() if isinstance(value, datetime) else value) * 1e9))
    return stamp


def list_request(
    service: str,
    *,
    state: str | int | None = None,
    method: str = "",
    created_after: datetime | float | None = None,
    created_before: datetime | float | None = None,
    all_clients: bool = False,
    page_size: int = 0,
    page_token: str = "",
) -> Any:
    """A service's ListJobsRequest. ``state`` is a name ("running") or a ``JobState`` value; times
    are datetimes or Unix seconds."""
    if isinstance(state, str):
        if state.lower() not in STATES:
            raise errors.InvalidArgument(f"state must be one of {', '.join(STATES)} (got {state!r})", field="state")
        state = STATES[state.lower()]
    return LIST_REQUESTS[service](
        state=state or job_pb2.JOB_STATE_UNSPECIFIED,
        method=method,
        created_after=_timestamp(created_after),
        created_before=_timestamp(created_before),
        all_clients=all_clients,
        page_size=page_size,
        page_token=page_token,
    )


@dataclass(frozen=True)
class ListedJob:
    """A job and the service it belongs to; ``job`` is that service's ``Job`` message."""

    service: str
    job: Any

    @property
    def status(self) -> job_pb2.JobStatus:
        return self.job.status

    def sort_key(self) -> tuple[int, str]:
        """The servers' order: newest first, then by id."""
        return (-self.status.create_time.ToMilliseconds(), self.status.job_id)


@dataclass(frozen=True)
class JobPage:
    jobs: list[ListedJob]
    next_page_token: str
    unavailable: list[str] = field(default_factory=list)  # services that did not answer (not running)


@dataclass
class _Source:
    token: str  # the token of the page the next unlisted job is on
    skip: int  # jobs of that page already listed
    fetch: str = ""  # the token to fetch next
    fetched: bool = False
    exhausted: bool = False
    pending: list[tuple[ListedJob, str, int]] = field(default_factory=list)  # (job, its page's token, index)


class JobMerge:
    """The merge as a small state machine, so the sync and async clients only do the calls:
    ``wanted()`` names what to fetch, ``add()`` takes each answer, ``page()`` gives the result."""

    def __init__(self, services: Sequence[str], page_size: int, page_token: str = "") -> None:
        unknown = sorted(set(services) - set(LIST_REQUESTS))
        if unknown:
            raise errors.InvalidArgument(f"services: unknown {unknown} (known: {', '.join(LIST_REQUESTS)})")
        if not 1 <= page_size <= 200:
            raise errors.InvalidArgument(f"page_size must be between 1 and 200 (got {page_size})", field="page_size")
        self.page_size = page_size
        cursors = decode(page_token) if page_token else {service: ("", 0) for service in services}
        self.sources = {
            service: _Source(token, skip, fetch=token)
            for service, (token, skip) in cursors.items()
            if service in services
        }
        self.unavailable: list[str] = []

    def wanted(self) -> list[tuple[str, str]]:
        """(service, page token) of every service that may still hold one of the next page's jobs."""
        return [
            (service, source.fetch)
            for service, source in self.sources.items()
            if not source.exhausted and len(source.pending) < self.page_size
        ]

    def add(self, service: str, token: str, jobs: Iterable[Any], next_page_token: str) -> None:
        source = self.sources[service]
        for index, job in enumerate(jobs):
            if token == source.token and index < source.skip:
                continue  # listed on an earlier merged page
            source.pending.append((ListedJob(service, job), token, index))
        source.fetched = True
        source.fetch = next_page_token
        source.exhausted = not next_page_token

    def unavailable_service(self, service: str) -> None:
        self.unavailable.append(service)
        del self.sources[service]

    def page(self) -> JobPage:
        merged = sorted(
            ((item, service) for service, source in self.sources.items() for item in source.pending),
            key=lambda pair: pair[0][0].sort_key(),
        )[: self.page_size]
        for (item, token, index), service in merged:
            source = self.sources[service]
            source.token, source.skip = token, index + 1
            source.pending = [entry for entry in source.pending if entry[0] is not item]
        cursors = {
            service: (source.token, source.skip)
            for service, source in self.sources.items()
            if source.pending or not source.exhausted
        }
        return JobPage([item[0] for item, _ in merged], encode(cursors) if cursors else "", self.unavailable)


def encode(cursors: dict[str, tuple[str, int]]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursors, separators=(",", ":")).encode()).decode()


def decode(token: str) -> dict[str, tuple[str, int]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return {str(service): (str(cursor[0]), int(cursor[1])) for service, cursor in data.items()}
    except (binascii.Error, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise errors.InvalidArgument(
            "page_token is not a token list_jobs made (pass next_page_token back unchanged)", field="page_token"
        ) from None


OUTPUT_KINDS = {"text": 1, "image": 2, "video": 3, "character": 4, "restored_image": 5}


def outputs_request(
    *,
    kind: str | None = None,
    page_size: int = 20,
    page_token: str = "",
    all_clients: bool = False,
    include_sub_jobs: bool = False,
    **times: Any,
) -> library_pb2.ListOutputsRequest:
    """A ListOutputsRequest; ``kind`` is a name ("image"), times (created_after/before) datetimes or
    Unix seconds; ``include_sub_jobs`` adds the outputs of sub-jobs (a character's stages)."""
    if kind is not None and kind not in OUTPUT_KINDS:
        raise errors.InvalidArgument(f"kind must be one of {', '.join(OUTPUT_KINDS)} (got {kind!r})", field="kind")
    return library_pb2.ListOutputsRequest(
        kind=OUTPUT_KINDS.get(kind or "", 0),
        page_size=page_size,
        page_token=page_token,
        all_clients=all_clients,
        include_sub_jobs=include_sub_jobs,
        **{name: _timestamp(value) for name, value in times.items()},
    )
