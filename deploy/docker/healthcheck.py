"""Container health check of a genmesh server: ``grpc.health.v1.Health/Check`` on 127.0.0.1.

    python /app/deploy/docker/healthcheck.py [PORT]

PORT defaults to ``$GENMESH_PLAINTEXT_HEALTH_PORT`` when the server has one (its gRPC port speaks
mutual TLS then), else ``$GENMESH_HEALTH_PORT`` (the image sets 50051, the Text server's port). Exit 0
when the server answers SERVING (model loaded, not draining), 1 otherwise. No grpc_health_probe
binary is needed: grpcio and grpcio-health-checking are genmesh dependencies already.
Kubernetes does not use this: it has native gRPC probes (``grpc: {port: ...}``).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(port: int, service: str = "", timeout: float = 3.0) -> int:
    # Never through an HTTP proxy from the environment: this is a loopback call.
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            print(f"unhealthy: health check on port {port} failed: {exc.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: port {port} answers {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    default = os.environ.get("GENMESH_PLAINTEXT_HEALTH_PORT") or os.environ.get("GENMESH_HEALTH_PORT", "50051")
    raw = argv[1] if len(argv) > 1 else default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        print(f"usage: healthcheck.py [PORT] (got port {raw!r})", file=sys.stderr)
        return 2
    return check(int(raw))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
