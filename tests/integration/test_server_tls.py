"""A real genmesh server process (the Agent: no model) with ``--tls-dir``: its gRPC port speaks mutual
TLS, its plaintext health port answers the health service and nothing else, the agent dials its own
services with its certificate, and a real Envoy rendered with ``--upstream-tls-dir`` reaches it.

Certificates come from openssl: one CA for the mesh (the server's SANs: ``agent`` as the gateway
dials it, 127.0.0.1 as these tests do), another CA for a stranger's certificate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from genmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from servers.mesh.envoy import Envoy, envoy_binary, render_envoy_config
from servers.mesh.processes import ManagedProcess, free_port, wait_until
from servers.mesh.s3 import S3Server
from tests.support.certificates import make_certificates

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "genmesh-test"
SECRET_KEY = "genmesh-test-secret-0123456789"
AGENT_SERVICE = "genmesh.agent.v1.AgentService"
TEXT_SERVICE = "genmesh.text.v1.TextService"
SERVING = health_pb2.HealthCheckResponse.SERVING
API_KEY = "tls-test-key"


@dataclass(frozen=True)
class TlsAgent:
    port: int
    health_port: int
    pki: Path  # <stem>/{tls.crt,tls.key,ca.crt} for agent, gateway, text; stranger/ from another CA
    process: ManagedProcess


def read(folder: Path) -> tuple[bytes, bytes, bytes]:
    return tuple((folder / name).read_bytes() for name in ("ca.crt", "tls.key", "tls.crt"))  # type: ignore[return-value]


def health_status(channel: grpc.Channel, service: str = "") -> int | grpc.StatusCode:
    """The status the server answers, or the code of the failed call."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return response.status


def tls_channel(port: int, client: Path | None, trusted_ca: Path) -> grpc.Channel:
    """A channel to 127.0.0.1:``port`` trusting ``trusted_ca``, presenting ``client``'s certificate if given."""
    ca = (trusted_ca / "ca.crt").read_bytes()
    if client is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        _, key, cert = read(client)
        credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def text_health_server(folder: Path) -> tuple[grpc.Server, int]:
    """Stands in for the Text server the agent calls: health only, mutual TLS from the mesh CA."""
    ca, key, cert = read(folder)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set(TEXT_SERVICE, SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


@pytest.fixture(scope="module")
def tls_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAgent]:
    folder = tmp_path_factory.mktemp("server-tls")
    pki = folder / "pki"
    make_certificates(pki, {"agent": "DNS:agent,IP:127.0.0.1", "gateway": "gateway", "text": "DNS:text,IP:127.0.0.1"})
    make_certificates(folder / "other", {"stranger": "gateway"}, ca_name="another CA")
    (pki / "stranger").symlink_to(folder / "other" / "stranger")
    text, text_port = text_health_server(pki / "text")
    s3 = S3Server(folder / "s3", ACCESS_KEY, SECRET_KEY, log_path=folder / "s3.log").start()
    port, health_port = free_port(), free_port()
    argv = [
        sys.executable, "-m", "servers", "agent", "--port", str(port), "--plaintext-health-port", str(health_port),
        "--tls-dir", str(pki / "agent"), f"--text-url=127.0.0.1:{text_port}", "--health-poll-seconds", "0.2",
    ]  # fmt: skip
    env = {
        "GENMESH_S3_ENDPOINT": s3.endpoint,
        "GENMESH_S3_ACCESS_KEY": ACCESS_KEY,
        "GENMESH_S3_SECRET_KEY": SECRET_KEY,
        "GENMESH_DATA_DIR": str(folder / "data"),
        "GENMESH_LOG_FORMAT": "json",
    }
    process = ManagedProcess("tls-agent", argv, log_path=folder / "agent.log", env=env).start()
    plaintext = grpc.insecure_channel(f"127.0.0.1:{health_port}")
    try:
        wait_until(lambda: health_status(plaintext) == SERVING, timeout=120, what="the TLS agent", process=process)
        yield TlsAgent(port, health_port, pki, process)
    finally:
        plaintext.close()
        process.stop()
        s3.stop()
        text.stop(grace=None)
    assert process.returncode() == 0, process.log_tail()


def test_a_client_with_a_certificate_from_the_ca_is_served(tls_agent: TlsAgent) -> None:
    with tls_channel(tls_agent.port, tls_agent.pki / "gateway", tls_agent.pki) as channel:
        assert health_status(channel) == SERVING
        # The agent reached its Text service over mutual TLS too: AgentService follows it.
        wait_until(lambda: health_status(channel, AGENT_SERVICE) == SERVING, timeout=30, what="AgentService")
        with pytest.raises(grpc.RpcError) as missing:
            agent_pb2_grpc.AgentServiceStub(channel).GetJob(agent_pb2.GetJobRequest(job_id="ag-none"), timeout=5)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # the API itself, not only health


@pytest.mark.parametrize("client", [None, "stranger"], ids=["no-certificate", "certificate-of-another-ca"])
def test_a_client_without_a_certificate_from_the_ca_is_refused(tls_agent: TlsAgent, client: str | None) -> None:
    with tls_channel(tls_agent.port, tls_agent.pki / client if client else None, tls_agent.pki) as channel:
        assert health_status(channel) == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(f"127.0.0.1:{tls_agent.port}") as channel:  # plaintext to the TLS port
        assert health_status(channel) == grpc.StatusCode.UNAVAILABLE
    assert tls_agent.process.alive()


def test_the_plaintext_health_port_serves_health_and_nothing_else(tls_agent: TlsAgent) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls_agent.health_port}") as channel:
        assert health_status(channel) == SERVING
        assert health_status(channel, AGENT_SERVICE) == SERVING
        with pytest.raises(grpc.RpcError) as job:
            agent_pb2_grpc.AgentServiceStub(channel).GetJob(agent_pb2.GetJobRequest(job_id="ag-none"), timeout=5)
        assert job.value.code() == grpc.StatusCode.UNIMPLEMENTED
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as listing:
            list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=5))
        assert listing.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The container health check finds that port in the environment the component sets.
    script = [sys.executable, str(ROOT / "deploy" / "docker" / "healthcheck.py")]
    env = {**os.environ, "GENMESH_PLAINTEXT_HEALTH_PORT": str(tls_agent.health_port), "GENMESH_HEALTH_PORT": "1"}
    assert subprocess.run(script, env=env, capture_output=True, timeout=30).returncode == 0


def test_the_gateway_reaches_the_server_over_mutual_tls(tls_agent: TlsAgent, tmp_path: Path) -> None:
    try:
        envoy_binary()
    except FileNotFoundError:
        pytest.skip("envoy not installed (mesh extra)")
    port, admin_port = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(
        render_envoy_config(
            listen_port=port,
            admin_port=admin_port,
            descriptor_path=ROOT / "deploy" / "envoy" / "genmesh.pb",
            api_keys={"tests": API_KEY},
            upstreams={"agent": [("127.0.0.1", tls_agent.port)]},
            rate_limit_rps=100,
            rate_limit_burst=100,
            upstream_tls_dir=tls_agent.pki / "gateway",
        )
    )
    gateway = Envoy(config, admin_port=admin_port, log_path=tmp_path / "envoy.log", concurrency=1).start()
    url = f"http://127.0.0.1:{port}/v1/agent/jobs/ag-none"
    try:
        # 503 until Envoy's TLS health check passes; then the agent itself answers NOT_FOUND.
        wait_until(lambda: http_get(url)[0] == 404, timeout=60, what="the agent behind the gateway", process=gateway)
        assert json.loads(http_get(url)[1])["code"] == 5
    finally:
        gateway.stop()


def http_get(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"x-api-key": API_KEY})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""
