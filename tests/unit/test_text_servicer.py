"""TextServicer in an in-process grpc.aio server with the real runtime and a fake engine and store:
the stream contract, error mapping, cancellation, disconnects, detached jobs."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format

from genmesh.common.v1 import job_pb2
from genmesh.errors import NotFound, Unavailable
from genmesh.text.v1 import text_pb2, text_pb2_grpc
from servers.runtime.events import TextDelta
from servers.runtime.interceptors import ErrorAndContextInterceptor
from servers.runtime.queue import JobQueue
from servers.text.servicer import TextServicer
from servers.text.types import FinishReason, TextOutcome, TextRequest
from storage.object_store import ObjectEntry, StoredObject


@dataclass
class FakeCatalog:
    default_name: str = "fake"

    def specs(self) -> list:
        return []


class FakeEngine:
    """Streams one token per 5 ms; ``crash`` raises an unexpected error."""

    n_ctx = 128

    def __init__(self) -> None:
        self.catalog = FakeCatalog()
        self.tokens_emitted = 0
        self.gate = threading.Event()

    def check(self, request: TextRequest) -> None:
        if request.model == "missing":
            raise NotFound("model: unknown model 'missing'", field="model")

    def generate(self, request: TextRequest, reporter) -> TextOutcome:
        if request.prompt == "crash":
            raise RuntimeError("secret detail")
        pieces = []
        for step in range(1, request.sampling.max_tokens + 1):
            reporter.check_cancelled()
            pieces.append(f"t{step} ")
            self.tokens_emitted = step
            reporter.output(TextDelta(pieces[-1]), step, request.sampling.max_tokens)
            self.gate.wait(0.005)
        return TextOutcome("".join(pieces), FinishReason.LENGTH, 3, len(pieces), 1.0, 100.0, 0.1, "fake", 7)


class FakeStore:
    def __init__(self) -> None:
        self.saved: dict[str, bytes] = {}
        self.down = False
        self.slow = threading.Event()  # set: a put waits until ``slow`` is cleared (at most 10 s)

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> StoredObject:
        for _ in range(1000):
            if not self.slow.is_set():
                break
            threading.Event().wait(0.01)
        if self.down:
            raise Unavailable("object storage at s3:9000 is unreachable: connection refused")
        self.saved[key] = data
        return StoredObject(bucket, key, f"http://s3/{key}", content_type, len(data), "0" * 64)

    def presign_get(self, bucket: str, key: str) -> str:
        return f"http://s3/{key}?signed"

    def get_bytes(self, bucket: str, key: str) -> bytes:
        if key not in self.saved:
            raise NotFound(f"no object {key}")
        return self.saved[key]

    def list(
        self, bucket: str, prefix: str = "", recursive: bool = True, start_after: str | None = None, page_keys=None
    ):
        """Keys in order, as S3 lists them."""
        for key in sorted(self.saved):
            if key.startswith(prefix) and (start_after is None or key > start_after):
                yield ObjectEntry(key, len(self.saved[key]), False)


@pytest.fixture
async def text_stub():
    queue = JobQueue(name="text", id_prefix="txt", devices=["cpu"], max_queued=2, service="genmesh.text.v1.TextService")
    engine, store = FakeEngine(), FakeStore()
    server = grpc.aio.server(interceptors=[ErrorAndContextInterceptor()])
    servicer = TextServicer(engine, queue, store)
    text_pb2_grpc.add_TextServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    queue.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield text_pb2_grpc.TextServiceStub(channel), engine, store, servicer
    await channel.close()
    await queue.drain(2)
    await server.stop(0)


def generate(prompt: str = "hello", max_tokens: int = 5, **kwargs) -> text_pb2.GenerateRequest:
    return text_pb2.GenerateRequest(prompt=prompt, sampling=text_pb2.SamplingOptions(max_tokens=max_tokens), **kwargs)


def generate_with(**sampling) -> text_pb2.GenerateRequest:
    return text_pb2.GenerateRequest(prompt="x", sampling=text_pb2.SamplingOptions(**sampling))


async def test_stream_contract(text_stub) -> None:
    stub, _, store, _ = text_stub
    events = [event async for event in stub.Generate(generate(max_tokens=4))]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "queued" and events[0].job_id.startswith("txt-")
    assert kinds[1] == "started"
    assert kinds[2] == "delta" and events[2].delta.text == "t1 "  # the first token at once
    assert set(kinds[2:-1]) == {"delta"}  # the others in frames: one delta may carry several tokens
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert {event.job_id for event in events} == {events[0].job_id}
    assert events[-1].state == job_pb2.JOB_STATE_SUCCEEDED
    assert events[-2].progress.step == 4 and events[-2].progress.total_steps == 4
    result = events[-1].result
    assert result.text == "t1 t2 t3 t4 " and result.usage.total_tokens == 7
    assert "".join(event.delta.text for event in events[2:-1]) == result.text
    # The one record is the job's, written before the result was sent: it holds this very result.
    assert (result.record.bucket, result.record.key) == ("outputs", f"jobs/{events[0].job_id}.json")
    recorded = json_format.Parse(store.saved[result.record.key], text_pb2.Job())
    assert recorded.result == result and recorded.status.state == job_pb2.JOB_STATE_SUCCEEDED
    assert recorded.status.method == "genmesh.text.v1.TextService/Generate"
    stored = [key for key in store.saved if not key.startswith("jobs/index/")]  # ListJobs' index names aside
    assert stored == [result.record.key]  # nothing else: no second copy in a folder
    assert result.parameters.prompt == "hello" and result.parameters.sampling.max_tokens == 4
    assert result.parameters.sampling.seed == result.seed and result.parameters.sampling.top_k == 40


async def test_the_last_tokens_are_sent_before_the_record_is_stored(text_stub) -> None:
    stub, _, store, servicer = text_stub
    servicer.frame_seconds = 60.0  # everything after the first token is held for the frame
    store.slow.set()
    call = stub.Generate(generate(max_tokens=4))
    deltas = []
    while len(deltas) < 2:
        event = await call.read()
        if event.WhichOneof("event") == "delta":
            deltas.append(event)
    assert [d.progress.step for d in deltas] == [1, 4] and deltas[1].delta.text == "t2 t3 t4 "
    assert not store.saved  # the record is still being stored
    store.slow.clear()
    last = await call.read()
    assert last.WhichOneof("event") == "result" and last.result.record.key in store.saved


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (generate(max_tokens=-5), "sampling.max_tokens"),
        (generate(prompt="   "), "prompt"),
        (
            text_pb2.GenerateRequest(prompt="x", sampling=text_pb2.SamplingOptions(temperature=3)),
            "sampling.temperature",
        ),
        (generate_with(top_p=0), "sampling.top_p"),
        (generate_with(seed=-1), "sampling.seed"),
    ],
)
async def test_invalid_argument_names_the_field(text_stub, request_message, field) -> None:
    stub = text_stub[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [event async for event in stub.Generate(request_message)]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details()


async def test_an_unknown_model_is_refused_before_queueing(text_stub) -> None:
    stub = text_stub[0]
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.Generate(text_pb2.GenerateRequest(prompt="x", model="missing")):
            events.append(event)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "model" in caught.value.details()
    assert events == []  # no job id: nothing was queued


async def test_floats_are_shown_as_sent(text_stub) -> None:
    stub = text_stub[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [event async for event in stub.Generate(generate_with(top_p=1.1))]
    assert caught.value.details() == "sampling.top_p: must be in (0, 1] (got 1.1)"
    bad = text_pb2.GenerateRequest(prompt="x", sampling=text_pb2.SamplingOptions(temperature=2.3))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [event async for event in stub.Generate(bad)]
    assert caught.value.details() == "sampling.temperature must be between 0 and 2 (got 2.3)"


async def test_chat_validation(text_stub) -> None:
    stub = text_stub[0]
    bad = text_pb2.ChatRequest(messages=[text_pb2.ChatMessage(role="robot", content="hi")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [event async for event in stub.Chat(bad)]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages[0].role" in caught.value.details()


async def test_crash_is_internal_without_details(text_stub) -> None:
    stub = text_stub[0]
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.Generate(generate(prompt="crash")):
            events.append(event)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in caught.value.details()
    assert events[-1].WhichOneof("event") == "error" and events[-1].error.code == "INTERNAL"


async def test_cancel_job_ends_the_stream_with_a_cancelled_event(text_stub) -> None:
    stub, engine, store, _ = text_stub
    events = []
    cancelled_at = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.Generate(generate(max_tokens=10_000)):
            events.append(event)
            if event.WhichOneof("event") == "delta" and event.progress.step >= 3 and not cancelled_at:
                cancelled_at = event.progress.step
                job = await stub.CancelJob(text_pb2.CancelJobRequest(job_id=event.job_id))
                assert job.status.job_id == event.job_id
                assert job.status.state == job_pb2.JOB_STATE_CANCELLED  # returned once it stopped
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    assert events[-1].WhichOneof("event") == "cancelled"
    assert engine.tokens_emitted - cancelled_at < 10  # stopped within a token or so of the cancel
    # Every token made before the cancel was streamed (the text held for the next frame included).
    streamed = [event for event in events if event.WhichOneof("event") == "delta"]
    assert streamed[-1].progress.step == engine.tokens_emitted
    assert "".join(event.delta.text for event in streamed) == "".join(
        f"t{n} " for n in range(1, engine.tokens_emitted + 1)
    )
    # No result is stored for a cancelled job, only its terminal record (GetJob after this process is gone).
    assert [key for key in store.saved if not key.startswith("jobs/")] == []
    job = await stub.GetJob(text_pb2.GetJobRequest(job_id=events[0].job_id))
    assert job.status.state == job_pb2.JOB_STATE_CANCELLED


async def test_client_disconnect_cancels_unless_detached(text_stub) -> None:
    stub, _, _, servicer = text_stub
    queue = servicer.queue
    for detach in (False, True):
        call = stub.Generate(generate(max_tokens=60, detach=detach))
        first = await call.read()
        await call.read()
        call.cancel()
        job = queue.get(first.job_id)
        async for _ in queue.events(job):  # ends with the job's terminal event
            pass
        expected = "succeeded" if detach else "cancelled"
        assert job.state.value == expected, detach
        if detach:
            fetched = await stub.GetJob(text_pb2.GetJobRequest(job_id=first.job_id))
            assert fetched.result.usage.completion_tokens == 60


async def test_unknown_job_is_not_found_and_bad_id_invalid(text_stub) -> None:
    stub = text_stub[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJob(text_pb2.GetJobRequest(job_id="txt-doesnotexist"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelJob(text_pb2.CancelJobRequest(job_id="../etc"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_full_queue_is_resource_exhausted_at_once(text_stub) -> None:
    stub = text_stub[0]
    # The queue holds 2 waiting jobs. The first must have left the queue (started) before the
    # others arrive, else the third would find the queue full: wait for its Started event.
    running = stub.Generate(generate(max_tokens=10_000))
    while (await running.read()).WhichOneof("event") != "started":
        pass
    waiting = [stub.Generate(generate(max_tokens=10_000)) for _ in range(2)]
    positions = [(await call.read()).queued.queue_position for call in waiting]
    assert sorted(positions) == [0, 1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [event async for event in stub.Generate(generate())]
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for call in (running, *waiting):
        call.cancel()


async def test_text_is_returned_when_storage_is_down(text_stub) -> None:
    stub, _, store, _ = text_stub
    store.down = True
    events = [event async for event in stub.Generate(generate(max_tokens=3))]
    result = events[-1].result
    assert result.text == "t1 t2 t3 " and not result.HasField("record")


A, B = (("x-client-id", "a"),), (("x-client-id", "b"),)
ADMIN = (("x-client-id", "ops"), ("x-genmesh-admin", "true"))


async def test_jobs_belong_to_the_client_that_made_them(text_stub) -> None:
    stub, _, store, servicer = text_stub
    call = stub.Generate(generate(max_tokens=3, detach=True), metadata=A)
    job_id = (await call.read()).job_id
    assert [event async for event in stub.WatchJob(text_pb2.WatchJobRequest(job_id=job_id), metadata=A)]
    assert (await stub.GetJob(text_pb2.GetJobRequest(job_id=job_id), metadata=A)).status.client_id == "a"
    for who in (ADMIN, ()):  # an admin key, and a call without the gateway (the operator)
        assert (await stub.GetJob(text_pb2.GetJobRequest(job_id=job_id), metadata=who)).status.job_id == job_id

    async def refused_for_b() -> None:
        for call in (
            stub.GetJob(text_pb2.GetJobRequest(job_id=job_id), metadata=B),
            stub.CancelJob(text_pb2.CancelJobRequest(job_id=job_id), metadata=B),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "not found" in caught.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            _ = [event async for event in stub.WatchJob(text_pb2.WatchJobRequest(job_id=job_id), metadata=B)]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    async def listed(metadata, **fields) -> list[str]:
        response = await stub.ListJobs(text_pb2.ListJobsRequest(**fields), metadata=metadata)
        return [job.status.job_id for job in response.jobs]

    await refused_for_b()
    assert await listed(A) == [job_id] and await listed(B) == [] and await listed(ADMIN, all_clients=True) == [job_id]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await listed(B, all_clients=True)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Once memory forgot it (retention, a restart), its record and index answer the same.
    for _ in range(200):
        if any(key.startswith("jobs/index/text/by-client/a/") for key in store.saved):
            break
        await asyncio.sleep(0.01)
    servicer.queue._jobs.clear()
    await refused_for_b()
    assert await listed(A) == [job_id] and await listed(B) == []
    assert await listed(A, state=job_pb2.JOB_STATE_SUCCEEDED, method="Generate") == [job_id]
    assert await listed(A, method="genmesh.text.v1.TextService/Chat") == []


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"page_size": 201}, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
        ({"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
        ({"page_token": "not-a-token"}, grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
        ({"method": "GenerateImage"}, grpc.StatusCode.INVALID_ARGUMENT, "method"),
        ({"state": 42}, grpc.StatusCode.INVALID_ARGUMENT, "state"),
    ],
)
async def test_bad_list_requests_name_the_field(text_stub, fields, code, field) -> None:
    stub, *_ = text_stub
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListJobs(text_pb2.ListJobsRequest(**fields), metadata=A)
    assert caught.value.code() == code and field in caught.value.details(), caught.value.details()
