"""LibraryService on every server: the library of outputs (``library.py``), proto in and out."""

from __future__ import annotations

import asyncio

from google.protobuf import struct_pb2

from genmesh.errors import InvalidArgument
from genmesh.library.v1 import library_pb2, library_pb2_grpc
from servers.runtime import caller
from servers.runtime.convert import timestamp
from servers.runtime.job_listing import (
    JobQuery,
    check_page_size,
    decode_token,
    encode_token,
    owner_filter,
    time_bounds,
)
from servers.runtime.library import Library, Output, library_states
from storage.object_store import ObjectStore

KINDS = {
    "text": library_pb2.OUTPUT_KIND_TEXT,
    "image": library_pb2.OUTPUT_KIND_IMAGE,
    "video": library_pb2.OUTPUT_KIND_VIDEO,
    "character": library_pb2.OUTPUT_KIND_CHARACTER,
    "restored_image": library_pb2.OUTPUT_KIND_RESTORED_IMAGE,
}
KIND_NAMES = {value: name for name, value in KINDS.items()}


def output_query(request: library_pb2.ListOutputsRequest, who: caller.Caller) -> JobQuery:
    page_size = check_page_size(request.page_size)
    owner = owner_filter(request.all_clients, who, "outputs")
    if request.kind and request.kind not in KIND_NAMES:
        raise InvalidArgument(f"kind: unknown output kind {request.kind}", field="kind")
    after, before = time_bounds(request)
    # The library index's names carry the kind where jobs' carry the state.
    states, dense = library_states(KIND_NAMES.get(request.kind), request.include_sub_jobs)
    return JobQuery(
        owner=owner,
        states=states,
        dense=dense,
        created_after_ms=after,
        created_before_ms=before,
        page_size=page_size,
        after=decode_token(request.page_token),
    )


def output_message(output: Output) -> library_pb2.Output:
    parameters = struct_pb2.Struct()
    parameters.update(output.parameters)
    return library_pb2.Output(
        job_id=output.job_id,
        kind=KINDS[output.kind],
        service=output.service,
        method=output.method,
        create_time=timestamp(output.created_ms / 1000),
        client_id=output.client_id,
        folder=output.folder,
        artifacts=output.artifacts,
        thumbnail=output.thumbnail,
        parameters=parameters,
        parent_job_id=output.parent_job_id,
    )


class LibraryServicer(library_pb2_grpc.LibraryServiceServicer):
    def __init__(self, store: ObjectStore) -> None:
        self.library = Library(store)

    async def ListOutputs(self, request, context) -> library_pb2.ListOutputsResponse:
        query = output_query(request, caller.current())
        outputs, after = await asyncio.to_thread(self.library.page, query)
        return library_pb2.ListOutputsResponse(
            outputs=[output_message(output) for output in outputs], next_page_token=encode_token(after)
        )

    async def DeleteOutput(self, request, context) -> library_pb2.DeleteOutputResponse:
        deleted = await asyncio.to_thread(self.library.delete, request.job_id)
        return library_pb2.DeleteOutputResponse(job_id=request.job_id, deleted_objects=deleted)
