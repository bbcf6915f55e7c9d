"""Server lifecycle with real processes: SIGTERM drains (running jobs finish, health says
NOT_SERVING, the gateway stops routing), and `genmesh up` starts and stops the whole mesh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmesh import errors
from genmesh.client import GenmeshClient
from servers.mesh.launcher import LaunchOptions, Mesh, health_status
from servers.mesh.processes import free_port, wait_until

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def own_mesh(tmp_path: Path):
    """A mesh of its own: these tests stop its text server."""
    mesh = Mesh(
        LaunchOptions(port=free_port(), services=("text",), data_dir=tmp_path / "data",
                      service_args={"text": ["--drain-seconds", "180", "--context-length", "2048"]})
    ).start()  # fmt: skip
    try:
        yield mesh
    finally:
        mesh.stop()


def test_sigterm_drains_running_job_and_gateway_stops_routing(own_mesh: Mesh) -> None:
    text_server = own_mesh.servers["text"]
    port = own_mesh.server_ports["text"]
    events: list = []
    failures: list = []

    def generate() -> None:
        with GenmeshClient(own_mesh.url, own_mesh.api_key) as client:
            try:
                events.extend(client.text.stream_generate("Count:", max_tokens=120, temperature=0.7))
            except errors.GenmeshError as exc:
                failures.append(exc)

    worker = threading.Thread(target=generate)
    worker.start()
    wait_until(lambda: any(e.WhichOneof("event") == "delta" for e in events), timeout=60, what="first token")
    os.kill(text_server.pid, signal.SIGTERM)
    wait_until(lambda: health_status(port) == NOT_SERVING, timeout=10, what="NOT_SERVING while draining")

    # While draining, the gateway's health checks take the server out of rotation.
    with GenmeshClient(own_mesh.url, own_mesh.api_key) as client:

        def refused() -> bool:
            try:
                client.text.list_models()
            except errors.Unavailable as exc:
                return "not available" in str(exc) or "shutting down" in str(exc)
            return False

        wait_until(refused, timeout=15, what="the gateway to stop routing")

    worker.join(240)
    assert not failures, failures
    assert events[-1].WhichOneof("event") == "result"  # the running job finished
    assert events[-1].result.usage.completion_tokens > 0
    text_server._popen.wait(timeout=30)
    assert text_server.returncode() == 0


def test_genmesh_up_starts_everything_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "GENMESH_API_KEYS": "ci=test-key-0123456789", "GENMESH_DATA_DIR": str(tmp_path)}
    genmesh = str(Path(sys.executable).parent / "genmesh")
    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log_file:
        up = subprocess.Popen([genmesh, "up", "--port", str(port)], stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:

        def answers() -> bool:
            with GenmeshClient(f"127.0.0.1:{port}", "test-key-0123456789") as client:
                return bool(client.text.generate("Hello", max_tokens=4).text is not None)

        wait_until(answers, timeout=180, what="genmesh up")
        output = log_path.read_text()
        assert f"http://127.0.0.1:{port}" in output and "genmesh text" in output
        assert "test-key-0123456789" not in output  # keys from the environment are never printed
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=90)
    assert code == 0, log_path.read_text()[-3000:]
    # Every child is gone: nothing listens on the gateway port any more.
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    assert (tmp_path / "s3-credentials.json").stat().st_mode & 0o777 == 0o600
