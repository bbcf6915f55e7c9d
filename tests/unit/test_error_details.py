"""The error's field reaches the caller: the interceptor sends ``GenmeshError.field`` as a
``google.rpc.BadRequest`` detail in the rich status, for unary and streaming RPCs (before the first
message and after some), and the client's ``translate`` reads it back into ``InvalidArgument.field``.
An in-process grpc.aio server with the real interceptor and a scripted Text servicer."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from genmesh import errors
from genmesh.client import AsyncGenmeshClient, GenmeshClient
from genmesh.client.connection import translate
from genmesh.text.v1 import text_pb2, text_pb2_grpc
from servers.runtime.interceptors import ErrorAndContextInterceptor

DETAILS_KEY = "grpc-status-details-bin"

# What the scripted servicer raises, by prompt (Generate) or job id (GetJob).
SCRIPTS: dict[str, Exception] = {
    "bad-tokens": errors.InvalidArgument(
        "sampling.max_tokens must be between 1 and 32768 (got -5)", field="sampling.max_tokens"
    ),
    "unknown-model": errors.NotFound("model: unknown model 'nope'; available: fake", field="model"),
    "no-field": errors.FailedPrecondition("job txt-1 has already finished"),
    "not-found-no-field": errors.NotFound("job 'txt-x' not found"),
    "internal-with-field": errors.Internal("internal error (pipeline); see the server log", field="secret.field"),
    "crash": RuntimeError("secret crash detail"),
}


class ScriptedText(text_pb2_grpc.TextServiceServicer):
    """Generate yields ``before`` messages then raises the scripted error; GetJob raises it at once."""

    async def Generate(self, request, context):
        for step in range(request.sampling.max_tokens):
            yield text_pb2.GenerateResponse(job_id="txt-scripted", delta=text_pb2.Delta(text=f"t{step} "))
        raise SCRIPTS[request.prompt]

    async def GetJob(self, request, context):
        raise SCRIPTS[request.job_id]


@pytest.fixture
async def server_port():
    server = grpc.aio.server(interceptors=[ErrorAndContextInterceptor()])
    text_pb2_grpc.add_TextServiceServicer_to_server(ScriptedText(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(0)


@pytest.fixture
async def stub(server_port):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server_port}")
    yield text_pb2_grpc.TextServiceStub(channel)
    await channel.close()


async def fail(stub, script: str, rpc: str, before: int = 0) -> tuple[grpc.aio.AioRpcError, int]:
    """Run the RPC until it fails; the error and how many messages came first."""
    received = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if rpc == "unary":
            await stub.GetJob(text_pb2.GetJobRequest(job_id=script))
        else:
            request = text_pb2.GenerateRequest(prompt=script, sampling=text_pb2.SamplingOptions(max_tokens=before))
            async for _ in stub.Generate(request):
                received += 1
    return caught.value, received


def bad_requests(error: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest]:
    status = rpc_status.from_call(error)  # also checks the status proto matches code and message
    found = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            found.append(error_details_pb2.BadRequest())
            detail.Unpack(found[-1])
    return found


CALLS = [("unary", 0), ("stream", 0), ("stream", 3)]  # stream: before the first message, after three


@pytest.mark.parametrize(("rpc", "before"), CALLS)
@pytest.mark.parametrize(
    ("script", "code", "field"),
    [
        ("bad-tokens", grpc.StatusCode.INVALID_ARGUMENT, "sampling.max_tokens"),
        ("unknown-model", grpc.StatusCode.NOT_FOUND, "model"),
    ],
)
async def test_field_travels_as_one_bad_request_violation(stub, rpc, before, script, code, field) -> None:
    error, received = await fail(stub, script, rpc, before)
    assert received == before
    assert error.code() == code
    assert error.details() == SCRIPTS[script].message  # the message text is unchanged
    status = rpc_status.from_call(error)
    assert status.code == code.value[0] and status.message == error.details()
    assert len(status.details) == 1
    (bad_request,) = bad_requests(error)
    assert len(bad_request.field_violations) == 1
    violation = bad_request.field_violations[0]
    assert violation.field == field
    assert violation.description == SCRIPTS[script].message


@pytest.mark.parametrize(("rpc", "before"), CALLS)
@pytest.mark.parametrize(
    ("script", "code"),
    [("no-field", grpc.StatusCode.FAILED_PRECONDITION), ("not-found-no-field", grpc.StatusCode.NOT_FOUND)],
)
async def test_error_without_field_carries_no_details(stub, rpc, before, script, code) -> None:
    error, received = await fail(stub, script, rpc, before)
    assert received == before
    assert error.code() == code and error.details() == SCRIPTS[script].message
    assert DETAILS_KEY not in dict(error.trailing_metadata() or ())
    assert rpc_status.from_call(error) is None and not bad_requests(error)


@pytest.mark.parametrize(("rpc", "before"), CALLS)
@pytest.mark.parametrize("script", ["crash", "internal-with-field"])
async def test_internal_errors_never_leak_details(stub, rpc, before, script) -> None:
    error, received = await fail(stub, script, rpc, before)
    assert received == before
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in error.details()  # neither the crash text nor the field
    trailing = dict(error.trailing_metadata() or ())
    assert DETAILS_KEY not in trailing
    assert not any("secret" in str(value) for value in trailing.values())
    translated = translate(error)
    assert isinstance(translated, errors.Internal) and translated.field is None


@pytest.mark.parametrize(("rpc", "before"), CALLS)
async def test_translate_sets_the_field_on_the_typed_exception(stub, rpc, before) -> None:
    error, _ = await fail(stub, "bad-tokens", rpc, before)
    translated = translate(error)
    assert type(translated) is errors.InvalidArgument
    assert translated.field == "sampling.max_tokens"
    assert str(translated) == "sampling.max_tokens must be between 1 and 32768 (got -5)"
    error, _ = await fail(stub, "unknown-model", rpc, before)
    translated = translate(error)
    assert type(translated) is errors.NotFound and translated.field == "model"
    error, _ = await fail(stub, "no-field", rpc, before)
    translated = translate(error)
    assert type(translated) is errors.FailedPrecondition and translated.field is None


async def test_sync_client_raises_invalid_argument_with_field(server_port) -> None:
    def call() -> tuple[errors.GenmeshError, errors.GenmeshError]:
        with GenmeshClient(f"127.0.0.1:{server_port}") as client:
            with pytest.raises(errors.InvalidArgument) as streamed:
                client.text.generate("bad-tokens", max_tokens=2)
            with pytest.raises(errors.NotFound) as unary:
                client.text.get_job("unknown-model")
        return streamed.value, unary.value

    streamed, unary = await asyncio.to_thread(call)
    assert streamed.field == "sampling.max_tokens"
    assert streamed.message.startswith("sampling.max_tokens")
    assert unary.field == "model"


async def test_async_client_raises_invalid_argument_with_field(server_port) -> None:
    async with AsyncGenmeshClient(f"127.0.0.1:{server_port}") as client:
        with pytest.raises(errors.InvalidArgument) as streamed:
            await client.text.generate("bad-tokens", max_tokens=2)
        with pytest.raises(errors.NotFound) as unary:
            await client.text.get_job("unknown-model")
    assert streamed.value.field == "sampling.max_tokens" and unary.value.field == "model"


def test_translate_without_trailing_metadata_or_with_a_broken_detail() -> None:
    class Bare(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.INVALID_ARGUMENT

        def details(self):
            return "prompt: must not be empty"

    class Broken(Bare):
        def trailing_metadata(self):
            return ((DETAILS_KEY, b"\xff not a status"),)

    for error in (Bare(), Broken()):
        translated = translate(error)
        assert type(translated) is errors.InvalidArgument
        assert translated.field is None and translated.message == "prompt: must not be empty"
