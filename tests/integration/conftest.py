"""The local mesh (S3 server, the text, image, video, training, agent and models servers, Envoy), started once for all
integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genmesh.client import GenmeshClient
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port
from storage.object_store import ObjectStore

WEBHOOK_ALLOW = "http://127.0.0.1:*/hooks/*"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory, monkeypatch_session: pytest.MonkeyPatch) -> Iterator[Mesh]:
    for name in ("GENMESH_API_KEYS", "GENMESH_API_KEYS_FILE"):
        monkeypatch_session.delenv(name, raising=False)
    # Completion webhooks to receivers on loopback under /hooks/ (tests/integration/test_webhooks.py), retried quickly.
    monkeypatch_session.setenv("GENMESH_WEBHOOK_ALLOW", WEBHOOK_ALLOW)
    monkeypatch_session.setenv("GENMESH_WEBHOOK_BACKOFF", "0.2")
    options = LaunchOptions(
        port=free_port(),
        services=("text", "image", "video", "training", "agent", "models"),
        data_dir=tmp_path_factory.mktemp("genmesh-data"),
        # Small queue so the full-queue path is testable; a small context keeps memory low.
        service_args={
            "text": ["--max-queued", "2", "--context-length", "2048"],
            "image": ["--threads", "1"],
            "video": ["--threads", "1"],
            "training": ["--threads", "1"],
            # Pull tests fetch from a file server on loopback (tests/support/model_server.py).
            "models": ["--pull-allowed-hosts", "http://127.0.0.1", "--pull-stall-seconds", "5"],
        },
    )
    mesh = Mesh(options).start()
    try:
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture(scope="session")
def monkeypatch_session() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="session")
def gateway_url(mesh: Mesh) -> str:
    return f"http://{mesh.url}"


@pytest.fixture(scope="session")
def api_key(mesh: Mesh) -> str:
    return mesh.api_key


@pytest.fixture(scope="session")
def client(mesh: Mesh) -> Iterator[GenmeshClient]:
    with GenmeshClient(mesh.url, mesh.api_key) as client:
        yield client


@pytest.fixture(scope="session")
def object_store(mesh: Mesh) -> ObjectStore:
    assert mesh.s3 is not None
    return ObjectStore(mesh.s3.settings())
