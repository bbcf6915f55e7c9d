"""The gateway image's entrypoint really renders, serves and drains; the web front door runs from it behind
the gateway; the servers' health check script."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from servers.mesh.processes import free_port
from tests.unit.deploy.helpers import (
    COMPOSE,
    DESCRIPTOR,
    DOCKER,
    ROOT,
    WEB_PORT,
    load_docs,
    needs_envoy,
    upstreams_from_compose,
)

# Straight to 127.0.0.1, whatever proxy the environment names.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 2) -> int:
    try:
        with _LOCAL.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _http_text(url: str) -> str:
    with _LOCAL.open(url, timeout=2) as response:
        return response.read().decode()


@pytest.fixture
def slow_text_upstream() -> Iterator[int]:
    """A gRPC server on 127.0.0.1 that is SERVING, answers TextService.GetJob at once and
    TextService.ListModels after SLOW_CALL_SECONDS (empty messages), to hold a request in flight."""

    def get_job(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b""

    def list_models(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(SLOW_CALL_SECONDS)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    handlers = {
        "GetJob": grpc.unary_unary_rpc_method_handler(get_job),
        "ListModels": grpc.unary_unary_rpc_method_handler(list_models),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("genmesh.text.v1.TextService", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(grace=None)


SLOW_CALL_SECONDS = 3.0


@needs_envoy
def test_gateway_entrypoint_renders_serves_and_drains(tmp_path: Path, slow_text_upstream: int) -> None:
    """The image's entrypoint end to end: render + validate + Envoy; keys enforced; on SIGTERM a
    request in flight still completes, then the gateway exits 0 without waiting out the drain time."""
    port, admin_port = free_port(), free_port()
    drain_seconds = 20
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENMESH_", "ENVOY_"))}
    env.update(
        {
            # The venv first: the entrypoint calls python3 and envoy from PATH, as in the image.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "GENMESH_API_KEYS": "ci=abc",
            "GENMESH_UPSTREAM_TEXT": f"127.0.0.1:{slow_text_upstream}",
            "GENMESH_UPSTREAM_IMAGE": "image:50052",  # a name nothing resolves here
            "GENMESH_ENVOY_CONFIG": str(tmp_path / "envoy" / "envoy.yaml"),
            "GENMESH_ENVOY_DESCRIPTOR": str(DESCRIPTOR),
            "GENMESH_GATEWAY_PORT": str(port),
            "GENMESH_GATEWAY_ADMIN_PORT": str(admin_port),
            "GENMESH_GATEWAY_DRAIN_SECONDS": str(drain_seconds),
            "ENVOY_LOG_LEVEL": "warn",
        }
    )
    url = f"http://127.0.0.1:{port}"
    key = {"x-api-key": "abc"}
    log_path = tmp_path / "gateway.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        ["/bin/sh", str(DOCKER / "gateway-entrypoint.sh"), "run"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except OSError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log_path.read_text()}"
            time.sleep(0.1)

    try:
        wait_for(lambda: _http_status(f"{url}/healthz") == 200, "the gateway")
        assert stat.S_IMODE(Path(env["GENMESH_ENVOY_CONFIG"]).stat().st_mode) == 0o600
        assert _http_status(f"{url}/v1/text/models") == 401  # no key
        assert _http_status(f"{url}/v1/images/models", key) == 503  # a key, but no image upstream
        wait_for(lambda: _http_status(f"{url}/v1/text/jobs/txt-1", key) == 200, "the text upstream")

        in_flight: dict[str, Any] = {}

        def slow_call() -> None:
            try:
                in_flight["status"] = _http_status(f"{url}/v1/text/models", key, timeout=30)
            except OSError as exc:
                in_flight["status"] = repr(exc)

        caller = threading.Thread(target=slow_call)
        caller.start()
        stats = f"http://127.0.0.1:{admin_port}/stats?filter=%5Ehttp%5C.gateway%5C.downstream_rq_active%24"
        wait_for(lambda: _http_text(stats).strip().endswith(": 1"), "the slow request to be in flight", 10)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=drain_seconds + 10) == 0, log_path.read_text()
        stopped_after = time.monotonic() - started
        caller.join(timeout=10)
        assert in_flight["status"] == 200, "the request in flight was cut by the drain"
        # It waited for the request, but not for the whole drain time.
        assert stopped_after < drain_seconds - 5, stopped_after
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


class _FakeStore(BaseHTTPRequestHandler):
    """Stands in for MinIO behind the gateway's media route: answers every GET with the Host header
    it was sent, which must be the one the URL was signed for."""

    def do_GET(self) -> None:
        body = f"host={self.headers['Host']} path={self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@needs_envoy
def test_web_front_door_runs_from_the_gateway_image_behind_the_gateway(yaml: Any, tmp_path: Path) -> None:
    """Compose's `web` service as the image runs it (the gateway entrypoint execs its command) with
    compose's environment, behind the gateway rendered with compose's GENMESH_UPSTREAM_WEB/_MEDIA
    (their hosts swapped for 127.0.0.1): the console and /openapi.json without a key, GET /v1/jobs with
    one, media by presigned-URL path to the store with the Host header unchanged."""
    services = load_docs(yaml, COMPOSE / "compose.yaml")[0]["services"]
    web_port, gateway_port, admin_port = free_port(), free_port(), free_port()
    store = ThreadingHTTPServer(("127.0.0.1", 0), _FakeStore)
    threading.Thread(target=store.serve_forever, daemon=True).start()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GENMESH_", "ENVOY_"))}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    web_env = {**base, **{k: str(v) for k, v in services["web"]["environment"].items() if "${" not in str(v)}}
    web_env.update({"GENMESH_WEB_HOST": "127.0.0.1", "GENMESH_WEB_PORT": str(web_port)})  # not 0.0.0.0 in a test
    gateway_env = {**base, **upstreams_from_compose(yaml)}
    assert gateway_env["GENMESH_UPSTREAM_WEB"] == f"web:{WEB_PORT}"
    gateway_env.update(
        {
            "GENMESH_API_KEYS": "ci=abc",
            "GENMESH_UPSTREAM_WEB": f"127.0.0.1:{web_port}",
            "GENMESH_UPSTREAM_MEDIA": f"127.0.0.1:{store.server_address[1]}",
            "GENMESH_ENVOY_CONFIG": str(tmp_path / "envoy" / "envoy.yaml"),
            "GENMESH_ENVOY_DESCRIPTOR": str(DESCRIPTOR),
            "GENMESH_GATEWAY_PORT": str(gateway_port),
            "GENMESH_GATEWAY_ADMIN_PORT": str(admin_port),
            "GENMESH_GATEWAY_DRAIN_SECONDS": "1",
            "ENVOY_LOG_LEVEL": "warn",
        }
    )
    entrypoint = ["/bin/sh", str(DOCKER / "gateway-entrypoint.sh")]
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("web", "gateway")}
    processes = {
        "web": subprocess.Popen([*entrypoint, *services["web"]["command"]], cwd=ROOT, env=web_env,
                                stdout=logs["web"], stderr=subprocess.STDOUT, start_new_session=True),
        "gateway": subprocess.Popen([*entrypoint, "run"], cwd=tmp_path, env=gateway_env,
                                    stdout=logs["gateway"], stderr=subprocess.STDOUT, start_new_session=True),
    }  # fmt: skip

    def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except OSError:
                pass
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited:\n{(tmp_path / f'{name}.log').read_text()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    web, gateway, key = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{gateway_port}", {"x-api-key": "abc"}
    try:
        wait_for(lambda: _http_status(f"{web}/livez") == 200, "the web front door")
        assert _http_status(f"{web}/health") == 503  # no server runs here: /health says so, /livez does not care
        wait_for(lambda: _http_status(f"{gateway}/ui/") == 200, "the console through the gateway")
        assert _http_status(f"{gateway}/openapi.json") == 200
        assert _http_status(f"{gateway}/v1/jobs") == 401  # the key check still applies
        assert _http_status(f"{gateway}/v1/jobs", key) == 503  # reaches the front door; no server is up
        assert _http_status(f"{gateway}/v1/status") == 401
        assert _http_status(f"{gateway}/v1/status", key) == 200  # each service reported down, not an error
        signed_for = f"localhost:{gateway_port}"
        path = "/outputs/20261207_1200/vid-1/video.mp4?X-Amz-Signature=0"  # no key: the URL carries its signature
        request = urllib.request.Request(f"{gateway}{path}")
        request.add_unredirected_header("Host", signed_for)
        with _LOCAL.open(request, timeout=5) as response:
            assert response.read().decode() == f"host={signed_for} path={path}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs.values():
            log.close()
        store.shutdown()
        store.server_close()


def test_gateway_entrypoint_refuses_to_serve_without_a_config(tmp_path: Path) -> None:
    env = {**os.environ, "GENMESH_ENVOY_CONFIG": str(tmp_path / "missing.yaml")}
    result = subprocess.run(
        ["/bin/sh", str(DOCKER / "gateway-entrypoint.sh"), "serve"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "no rendered config" in result.stderr


# ------------------------------------------------------------------------------------------------
# The container health check


def test_healthcheck_script_reports_serving_only() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    script = [sys.executable, str(DOCKER / "healthcheck.py")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, *args], capture_output=True, text=True, timeout=30)

    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        result = run(str(port))
        assert result.returncode == 1 and "NOT_SERVING" in result.stderr
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run(str(port)).returncode == 0
        env_port = subprocess.run(
            script, env={**os.environ, "GENMESH_HEALTH_PORT": str(port)}, capture_output=True, timeout=30
        )
        assert env_port.returncode == 0
    finally:
        server.stop(grace=None)
    assert run(str(port)).returncode == 1  # nobody listening
    assert run("not-a-port").returncode == 2
