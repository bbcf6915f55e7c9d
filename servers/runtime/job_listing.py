"""ListJobs without reading the whole bucket: an index of finished jobs whose key names sort newest
first, merged with the jobs a server holds in memory, in keyset pages.

Index (``outputs`` bucket), written with each terminal record (``job_records.py``), two empty
objects per job::

    jobs/index/<service>/all/<position>.<state>.<rpc>
    jobs/index/<service>/by-client/<client id or ->/<position>.<state>.<rpc>

``position`` is ``<13-digit (10^13 - 1 - created ms)>-<job id>``: S3 lists keys in ascending order,
so the newest job comes first, and a position is a total order (the id breaks ties). A page is one
listing that seeks to its start (``start_after``: the page token, or ``created_before``) and reads
at most ``SCAN_LIMIT`` names, filtering state and method on the names alone; then one read per job
returned. A caller's own jobs come from their own prefix, so a client with few jobs never scans
other clients' names. When the scan stops early, the last name scanned is the page's horizon:
nothing past it is returned yet (memory's jobs included), and the next page starts there, so a
page may be short while more remain.

Live jobs of other replicas: the forwarding interceptor (which knows the peers) sets
``peer_live_jobs`` for a ListJobs call; the replica asked merges what every other replica holds
queued or running (those answer ``answering_peer`` calls from memory only, never the index).

Nothing here imports grpc; ``job_rpcs.py`` turns requests into ``JobQuery`` and pages into messages.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from genmesh.errors import InvalidArgument, PermissionDenied, require
from servers.runtime.caller import Caller
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore

INDEX_PREFIX = "jobs/index/"
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 200
SCAN_LIMIT = 1000  # index names read per page at most: one S3 list request
_MAX_MS = 10**13 - 1  # positions stay 13 digits until the year 2286
_NO_CLIENT = "-"  # the by-client folder of jobs made without the gateway (client names never are "-")
_POSITION = re.compile(r"[0-9]{13}-[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN_VERSION = "p1:"


# Set per ListJobs call by the forwarding interceptor: the other replicas' ListJobs answers (raw
# bytes, one per replica that answered), or None without peers.
peer_live_jobs: ContextVar[Callable[[], Awaitable[list[bytes]]] | None] = ContextVar("peer_live_jobs", default=None)
# True for a ListJobs call another replica made: answer the live jobs held here, nothing else.
answering_peer: ContextVar[bool] = ContextVar("answering_peer", default=False)


# (service, RPC) -> the kind of output its jobs store in the ``outputs`` bucket (``library.py``).
OUTPUT_KINDS = {
    ("text", "Generate"): "text",
    ("text", "Chat"): "text",
    ("image", "GenerateImage"): "image",
    ("video", "GenerateVideo"): "video",
    ("agent", "CreateCharacter"): "character",
    ("training", "RestoreImage"): "restored_image",
}


SUB_JOB_MARK = "-sub"  # the library index names a sub-job's kind "image-sub": listed only when asked


def output_kind(service: str, method: str) -> str | None:
    return OUTPUT_KINDS.get((service, rpc_name(method)))


def library_kind(kind: str, sub_job: bool) -> str:
    """The kind as the library index names it: a sub-job's ("image-sub") apart from a client's."""
    return kind + SUB_JOB_MARK if sub_job else kind


def split_library_kind(name: str) -> tuple[str, bool]:
    """``library_kind`` undone: ("image", True) for "image-sub"."""
    return (name.removesuffix(SUB_JOB_MARK), True) if name.endswith(SUB_JOB_MARK) else (name, False)


def milliseconds(created_at: float) -> int:
    """The milliseconds a Timestamp made from ``created_at`` holds (``convert.timestamp``), so a job
    positions the same from a ``Job`` in memory and from its message (a peer's answer, a record)."""
    return int(created_at * 1e9) // 1_000_000


def position(created_at: float, job_id: str) -> str:
    return position_ms(milliseconds(created_at), job_id)


def position_ms(ms: int, job_id: str) -> str:
    return f"{_MAX_MS - ms:013d}-{job_id}"


def created_ms(position_: str) -> int:
    return _MAX_MS - int(position_[:13])


def rpc_name(method: str) -> str:
    """``"genmesh.text.v1.TextService/Generate"`` -> ``"Generate"`` (a bare name stays as it is)."""
    return method.rpartition("/")[2]


@dataclass(frozen=True)
class Listed:
    """One job as the listing sees it; ``source`` is what the page turns into a message (a live
    ``Job``, a peer's message, a service's own record; None for a job known by its index name)."""

    position: str
    job_id: str
    state: str  # a JobState value: "queued", "running", "succeeded", ...
    method: str  # the RPC's name, "Generate"
    owner: str | None = None  # None when unknown (an index name of the all-clients folder)
    source: Any = None


@dataclass(frozen=True)
class JobQuery:
    owner: str | None  # None: every client's jobs
    states: frozenset[str] | None = None  # None: every state
    method: str = ""  # an RPC name; "" every RPC
    created_after_ms: int | None = None
    created_before_ms: int | None = None
    page_size: int = PAGE_SIZE_DEFAULT
    after: str = ""  # the position the previous page ended at
    # Whether ``states`` leaves out only a few names (the library's sub-jobs): the scan then reads
    # names a page at a time, as without a filter, instead of up to its limit in one request.
    dense: bool = False

    def matches(self, listed: Listed) -> bool:
        ms = created_ms(listed.position)
        return (
            (self.owner is None or listed.owner is None or listed.owner == self.owner)
            and (self.states is None or listed.state in self.states)
            and (not self.method or listed.method == self.method)
            and (self.created_after_ms is None or ms > self.created_after_ms)
            and (self.created_before_ms is None or ms < self.created_before_ms)
            and (not self.after or listed.position > self.after)
        )


def check_page_size(page_size: int) -> int:
    """``page_size`` of a request: 0 means the default; 1..200 otherwise."""
    require(
        0 <= page_size <= PAGE_SIZE_MAX,
        "page_size",
        f"page_size must be between 1 and {PAGE_SIZE_MAX}, or 0 for {PAGE_SIZE_DEFAULT} (got {page_size})",
    )
    return page_size or PAGE_SIZE_DEFAULT


def owner_filter(all_clients: bool, who: Caller, listed: str) -> str | None:
    """The owner a listing shows: the caller's own (its client id), or None (every client's) for an
    admin asking ``all_clients``; PERMISSION_DENIED naming the field for anyone else asking."""
    if all_clients and not who.admin:
        raise PermissionDenied(
            f"all_clients: only an admin API key lists other clients' {listed} (mark the key `admin` in the keys file)",
            field="all_clients",
        )
    return None if all_clients else who.client_id


def time_bounds(request: Any) -> tuple[int | None, int | None]:
    """A request's ``created_after`` / ``created_before`` in milliseconds (None when unset)."""

    def ms(stamp: Any) -> int:
        return max(0, min(stamp.ToMilliseconds(), _MAX_MS))

    after = ms(request.created_after) if request.HasField("created_after") else None
    before = ms(request.created_before) if request.HasField("created_before") else None
    if after is not None and before is not None and after >= before:
        raise InvalidArgument("created_after must be before created_before", field="created_after")
    return after, before


def encode_token(position_: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_VERSION + position_).encode()).decode().rstrip("=") if position_ else ""


def decode_token(token: str) -> str:
    """The position a ``next_page_token`` holds; INVALID_ARGUMENT naming ``page_token`` otherwise."""
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    value = text.removeprefix(_TOKEN_VERSION)
    if not text.startswith(_TOKEN_VERSION) or not _POSITION.fullmatch(value):
        raise InvalidArgument(
            "page_token is not a token this server's ListJobs made (pass next_page_token back unchanged)",
            field="page_token",
        )
    return value


class JobIndex:
    """The index of one service's finished jobs in the ``outputs`` bucket."""

    def __init__(self, store: ObjectStore, service: str) -> None:
        self.store = store
        self.service = service  # "text": the folder under jobs/index/

    def _prefix(self, owner: str | None) -> str:
        if owner is None:
            return f"{INDEX_PREFIX}{self.service}/all/"
        return f"{INDEX_PREFIX}{self.service}/by-client/{owner or _NO_CLIENT}/"

    def keys(self, job_id: str, created_ms: int, state: str, method: str, owner: str) -> list[str]:
        name = f"{position_ms(created_ms, job_id)}.{state}.{rpc_name(method)}"
        return [self._prefix(None) + name, self._prefix(owner) + name]

    def add(self, job_id: str, created_at: float, state: str, method: str, owner: str) -> None:
        """Blocking. Written after the record, so an indexed job always has one to read."""
        for key in self.keys(job_id, milliseconds(created_at), state, method, owner):
            self.store.put_bytes(OUTPUTS, key, b"", content_type="application/octet-stream")

    def scan(self, query: JobQuery) -> tuple[list[Listed], str | None]:
        """Up to ``page_size + 1`` matching jobs from one bounded listing, and the horizon: the last
        position scanned when the listing stopped before the end, else None."""
        prefix = self._prefix(query.owner)
        starts = []
        if query.after:
            starts.append(query.after + ".~")  # "~" sorts after every state letter: skips that job
        if query.created_before_ms is not None:
            starts.append(f"{_MAX_MS - query.created_before_ms:013d}~")  # skips that millisecond too
        start = prefix + max(starts) if starts else None
        found: list[Listed] = []
        scanned = 0
        # Without a filter on the names (or one that leaves out few), the page's names (and one to
        # know whether more follow) are about all it needs; with one, up to the scan limit in one
        # request.
        sparse = (query.states is not None and not query.dense) or query.method
        page_keys = SCAN_LIMIT if sparse else query.page_size + 1
        for entry in self.store.list(OUTPUTS, prefix, start_after=start, page_keys=page_keys):
            listed = parse_name(entry.key[len(prefix) :], query.owner)
            if listed is None:
                continue
            if query.created_after_ms is not None and created_ms(listed.position) <= query.created_after_ms:
                return found, None  # older than the range: nothing further can match
            scanned += 1
            if query.matches(listed):
                found.append(listed)
            if len(found) > query.page_size or scanned >= SCAN_LIMIT:
                return found, listed.position
        return found, None


def parse_name(name: str, owner: str | None) -> Listed | None:
    parts = name.rsplit(".", 2)
    if len(parts) != 3 or not _POSITION.fullmatch(parts[0]):
        return None
    return Listed(parts[0], parts[0][14:], parts[1], parts[2], owner)


def merge(
    query: JobQuery, stored: list[Listed], horizon: str | None, live: Iterable[Listed]
) -> tuple[list[Listed], str]:
    """One page from the index's jobs and those held in memory (which win for a job in both: they
    are fresher), and the position the next page starts after ("" when there is none)."""
    by_id = {listed.job_id: listed for listed in stored}
    by_id.update({listed.job_id: listed for listed in live if query.matches(listed)})
    candidates = sorted(
        (listed for listed in by_id.values() if horizon is None or listed.position <= horizon),
        key=lambda listed: listed.position,
    )
    page = candidates[: query.page_size]
    if len(candidates) > query.page_size:
        return page, page[-1].position
    return page, horizon or ""
