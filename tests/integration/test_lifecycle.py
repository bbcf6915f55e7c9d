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


def test_a_second_genmesh_up_says_what_is_in_the_way_and_leaves_the_first_alone(
    mesh: Mesh, client: GenmeshClient, tmp_path: Path
) -> None:
    """`genmesh up` twice, on the same data folder or only the same port: one line naming the running
    mesh (this test process started the shared one, so it holds the lock and is Envoy's parent), exit
    1 before anything starts, and the first mesh keeps serving."""

    def second_up(data_dir: Path) -> subprocess.CompletedProcess[str]:
        argv = ["up", "--services", "text", "--port", str(mesh.options.port), "--data-dir", str(data_dir)]
        return subprocess.run(
            [sys.executable, "-c", "from genmesh.cli import main; main()", *argv], capture_output=True, text=True,
            timeout=60, env={**os.environ, "GENMESH_API_KEYS": "second=second-key-0123456789"},
        )  # fmt: skip

    same = second_up(mesh.data_dir)
    assert same.returncode == 1, same.stderr
    assert same.stderr.splitlines() == [
        f"genmesh up failed: the data folder {mesh.data_dir} is in use by genmesh up pid {os.getpid()}"
    ]
    other = second_up(tmp_path / "other")
    assert other.returncode == 1, other.stderr
    assert other.stderr.splitlines() == [
        f"genmesh up failed: port {mesh.options.port} is in use (another genmesh up? pid {os.getpid()})"
    ]
    # Nothing was written there (no key, no S3 data, no logs) beyond its lock file, left empty.
    assert [path.name for path in (tmp_path / "other").iterdir()] == ["genmesh-up.lock"]
    assert (tmp_path / "other" / "genmesh-up.lock").read_text() == ""
    assert all(process.alive() for process in mesh.children())
    assert client.text.list_models()
