"""A server that is down or dies mid-call reaches the caller as UNAVAILABLE naming the service,
never as the transport's bare INTERNAL; the server's own errors keep their code and message."""

from __future__ import annotations

import grpc
import pytest

from genmesh import errors
from genmesh.client.connection import service_of, translate
from genmesh.image.v1 import image_pb2_grpc


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return ()


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2"),
        (grpc.StatusCode.INTERNAL, "Stream removed"),
        (grpc.StatusCode.UNAVAILABLE, "no healthy upstream"),
        (grpc.StatusCode.UNAVAILABLE, "upstream connect error or disconnect/reset before headers"),
    ],
)
def test_a_server_that_is_down_or_went_away_is_unavailable_naming_it(code, details) -> None:
    error = translate(FakeRpcError(code, details), "image")
    assert isinstance(error, errors.Unavailable) and "image server" in error.message


def test_server_errors_keep_their_code_and_message() -> None:
    error = translate(FakeRpcError(grpc.StatusCode.INTERNAL, "internal error (KeyError); see the server log"), "text")
    assert isinstance(error, errors.Internal) and "KeyError" in error.message
    draining = translate(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down"), "text")
    assert isinstance(draining, errors.Unavailable) and draining.message == "the server is shutting down"


def test_service_names_come_from_the_declarations() -> None:
    assert service_of(image_pb2_grpc.ImageServiceStub(grpc.insecure_channel("127.0.0.1:1"))) == "image"
