"""The library of outputs: every succeeded job that stored files in the ``outputs`` bucket, newest
first, across services, read from the store alone (so any server answers for all of them).

It is a view of the terminal records (``job_records.py``): a job that succeeded with a kind of
output (``OUTPUT_KINDS``) also gets two names in a library index shaped like the jobs' one
(``job_listing.py``), under ``jobs/index/library/``, whose names carry the kind and the service::

    jobs/index/library/{all,by-client/<client>}/<position>.<kind>.<service>

A sub-job's kind is marked (``library_kind``: "image-sub" for a character's portrait as its Image
job made it, its record naming the character in ``parent_job_id``): a listing leaves those names
out unless asked to include sub-jobs, so a character is one output. (Sub-jobs indexed before the
mark existed list as their kind.)

A page is one bounded listing of those names plus one record read per output; each output's
artifacts are the ``Artifact`` messages of its recorded result, presigned afresh (locally, no
request). The record is the job's only one: outputs of older versions also have a ``result.json``
in their folder, which their recorded result's ``record`` names; they list the same, and it goes
with their folder. Deleting an output removes its folder (a text output has none: its text is in
the record) and its index names, and marks its record.

Nothing here imports grpc.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from google.protobuf import json_format
from google.protobuf.message import Message

from genmesh.common.v1 import artifact_pb2
from genmesh.errors import NotFound
from genmesh.services import BY_NAME
from servers.runtime import caller
from servers.runtime.job_listing import (
    OUTPUT_KINDS,
    JobIndex,
    JobQuery,
    Listed,
    library_kind,
    output_kind,
    position_ms,
    split_library_kind,
)
from servers.runtime.job_records import TerminalRecords
from servers.runtime.protos import returned_type
from storage.buckets import OUTPUTS
from storage.keys import validate_job_id
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

LIBRARY_FOLDER = "library"  # jobs/index/library/: no service is named so
# The artifact shown for an output, by kind: the first one found under this field of the result.
THUMBNAILS = {"image": "images", "video": "poster", "character": "portrait", "restored_image": "image"}
READERS = 8  # record reads in flight for one page (the store client keeps 10 connections)


@dataclass(frozen=True)
class Output:
    """One output as the library lists it (the servicer converts it)."""

    job_id: str
    kind: str
    service: str
    method: str
    created_ms: int
    client_id: str
    folder: str
    artifacts: list[artifact_pb2.Artifact]
    thumbnail: artifact_pb2.Artifact | None
    parameters: dict[str, Any]
    parent_job_id: str = ""  # the job this one is a step of; "" for one a client asked for


def artifacts_of(message: Message) -> Iterator[tuple[str, artifact_pb2.Artifact]]:
    """Every ``Artifact`` in a result, with the name of the top-level field it is under."""

    def walk(node: Message, top: str) -> Iterator[tuple[str, artifact_pb2.Artifact]]:
        for field, value in node.ListFields():
            if field.message_type is None:
                continue
            items = value if field.is_repeated else [value]
            for item in items:
                if not isinstance(item, Message):
                    continue  # a map's scalar values
                if isinstance(item, artifact_pb2.Artifact):
                    yield top or field.name, item
                else:
                    yield from walk(item, top or field.name)

    yield from walk(message, "")


def sub_job_ids(message: Message | None) -> list[str]:
    """The sub-job ids a result names (``sub_job_id`` fields at any depth), each once, in order."""
    found: dict[str, None] = {}

    def walk(node: Message) -> None:
        for field, value in node.ListFields():
            if field.name == "sub_job_id" and isinstance(value, str):
                found[value] = None
            elif field.message_type is not None:
                for item in value if field.is_repeated else [value]:
                    if isinstance(item, Message):
                        walk(item)

    if message is not None:
        walk(message)
    return list(found)


def library_states(kind: str | None, include_sub_jobs: bool) -> tuple[frozenset[str] | None, bool]:
    """The index kinds a listing of ``kind`` (None: every kind) shows, and whether they leave out few
    names (``JobQuery.dense``): without sub-jobs, every client's kind but no sub-job's."""
    kinds = [kind] if kind is not None else sorted(set(OUTPUT_KINDS.values()))
    if kind is None and include_sub_jobs:
        return None, False
    names = {library_kind(name, False) for name in kinds}
    if include_sub_jobs:
        names |= {library_kind(name, True) for name in kinds}
    return frozenset(names), kind is None


def library_index(store: ObjectStore) -> JobIndex:
    """The library's index: its names carry the kind and the service where a job index's carry the
    state and the RPC (``TerminalRecords`` adds a job to it with those)."""
    return JobIndex(store, LIBRARY_FOLDER)


class Library:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.index = library_index(store)
        self.records = TerminalRecords(store)
        # Kept: starting threads per page costs more than the reads on a busy machine.
        self._readers = ThreadPoolExecutor(READERS, thread_name_prefix="library-read")

    def add(self, job_id: str, created_at: float, kind: str, service: str, owner: str) -> None:
        """Blocking; called with the job's terminal record (``TerminalRecords.save``)."""
        self.index.add(job_id, created_at, kind, service, owner)

    def page(self, query: JobQuery) -> tuple[list[Output], str]:
        """One page: ``query.states`` are kinds as the index names them (``library_states``) and
        ``query.method`` stays empty."""
        found, horizon = self.index.scan(query)
        page = found[: query.page_size]
        after = page[-1].position if len(found) > query.page_size else (horizon or "")
        outputs = list(self._readers.map(self._output, page))
        return [output for output in outputs if output is not None], after

    def _output(self, listed: Listed) -> Output | None:
        service = listed.method  # the index names' last part is the service here
        recorded = self.records.load(listed.job_id, returned_type(BY_NAME[service].proto_service, "GetJob"))
        if recorded is None or recorded.status.HasField("outputs_deleted_time"):
            return None
        result = getattr(recorded, "result", None)
        if result is None:
            return None
        if service == "training":  # a task's TaskResult: the RPC's own result inside
            result = getattr(result, result.WhichOneof("result") or "", None) or result
        found = list(artifacts_of(result))
        artifacts = []
        for _, artifact in found:
            fresh = artifact_pb2.Artifact()
            fresh.CopyFrom(artifact)
            fresh.ClearField("data")
            fresh.url = self.store.presign_get(fresh.bucket, fresh.key)
            artifacts.append(fresh)
        kind, _ = split_library_kind(listed.state)
        top = THUMBNAILS.get(kind)
        thumbnail = next((fresh for (name, _), fresh in zip(found, artifacts, strict=True) if name == top), None)
        # One entry per file: a character names its portrait twice (as itself and as its stage's).
        unique = {(artifact.bucket, artifact.key): artifact for artifact in reversed(artifacts)}
        artifacts = [artifact for artifact in artifacts if unique[(artifact.bucket, artifact.key)] is artifact]
        own = [
            artifact.key
            for artifact in artifacts
            if artifact.bucket == OUTPUTS and f"/{listed.job_id}/" in artifact.key
        ]
        folder = own[0][: own[0].index(f"/{listed.job_id}/")] + f"/{listed.job_id}/" if own else ""
        parameters = json_format.MessageToDict(result, preserving_proto_field_name=True).get("parameters", {})
        for name in ("model", "seed"):  # text's are the result's own fields (records of old versions: only these)
            if name not in parameters and name in result.DESCRIPTOR.fields_by_name:
                parameters[name] = getattr(result, name)
        return Output(
            job_id=listed.job_id,
            kind=kind,
            service=service,
            method=recorded.status.method,
            created_ms=recorded.status.create_time.ToMilliseconds(),
            client_id=recorded.status.client_id,
            folder=folder,
            artifacts=artifacts,
            thumbnail=thumbnail,
            parameters=parameters,
            parent_job_id=recorded.status.parent_job_id,
        )

    def delete(self, job_id: str) -> int:
        """Remove a job's output folder and index names and mark its record, and so for the sub-jobs
        its result names (a character's stages as their services made them: listed only with their
        parent, they go with it); the objects removed. NOT_FOUND for an unknown job, one without
        outputs, or another client's job."""
        deleted, result = self._delete(job_id)
        for sub_job in sub_job_ids(result):
            with contextlib.suppress(NotFound):  # its outputs are gone already, or it made none
                deleted += self._delete(sub_job, parent=job_id)[0]
        return deleted

    def _delete(self, job_id: str, parent: str = "") -> tuple[int, Message | None]:
        """One job's outputs deleted (``delete``); ``parent``: only if it is that job's sub-job. The
        objects removed and the job's result."""
        validate_job_id(job_id)
        service_info = next((info for info in BY_NAME.values() if job_id.partition("-")[0] in info.job_prefixes), None)
        missing = NotFound(f"job {job_id!r} has no stored outputs", field="job_id")
        if service_info is None:
            raise missing
        recorded = self.records.load(job_id, returned_type(service_info.proto_service, "GetJob"))
        if recorded is None or not caller.current().may_see(recorded.status.client_id):
            raise missing
        if parent and recorded.status.parent_job_id != parent:
            raise missing
        status = recorded.status
        kind = output_kind(service_info.name, status.method)
        listed = self._output(
            Listed(position_ms(0, job_id), job_id, kind or "", service_info.name, status.client_id)
        )  # its folder, from its artifacts
        if kind is None or listed is None or not (listed.folder or kind == "text"):
            raise missing
        deleted = 0
        for entry in list(self.store.list(OUTPUTS, listed.folder)) if listed.folder else []:
            self.store.delete(OUTPUTS, entry.key)
            deleted += 1
        created_ms = status.create_time.ToMilliseconds()
        named = library_kind(kind, sub_job=bool(status.parent_job_id))
        for key in self.index.keys(job_id, created_ms, named, service_info.name, status.client_id):
            self.store.delete(OUTPUTS, key)
        status.outputs_deleted_time.FromNanoseconds(time.time_ns())
        self.records.write(job_id, recorded)
        log.info("outputs_deleted", job_id=job_id, objects=deleted, folder=listed.folder, parent_job_id=parent)
        return deleted, getattr(recorded, "result", None)
