"""The gateway's strict JSON check (deploy/envoy/strict_json.lua): what it adds to one request.

    .venv/bin/python bench/strict_json.py [--requests 2000] [--image-kib 512]

Two real Envoys side by side, each in front of a direct response (so only the gateway is timed), one
with the check and one whose Lua filter only buffers the body (the gateway's transcoder reads every
body whole too, so the difference is the check's own work); the same requests go to each in turn,
over one kept-alive connection. Prints the median and p90 latency of each and the added microseconds per request for a
typical text-generation body (a streaming route), a training spec, and an image request with a
base64 init image of --image-kib (the check scans it once). Last line: ``added_us_p50=<text body>``.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers.mesh.envoy import Envoy
from servers.mesh.launcher import DESCRIPTOR_PATH
from servers.mesh.processes import free_port
from servers.mesh.request_fields import render_lua

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
BUFFER_ONLY = "function envoy_on_request(handle) handle:body() end"


def config(port: int, admin_port: int, lua: str) -> str:
    filters = [{"name": "envoy.filters.http.lua", "typed_config": {"@type": LUA, "default_source_code": {
        "inline_string": lua}}}]  # fmt: skip
    filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}})
    listener = {
        "name": "bench",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "per_connection_buffer_limit_bytes": 67108864,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM, "stat_prefix": "bench", "http_filters": filters,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
        }}]}],
    }  # fmt: skip
    admin = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
    return json.dumps({"admin": admin, "static_resources": {"listeners": [listener]}})


def start(folder: Path, name: str, lua: str) -> tuple[Envoy, str]:
    port, admin_port = free_port(), free_port()
    path = folder / f"{name}.json"
    path.write_text(config(port, admin_port, lua))
    envoy = Envoy(path, admin_port=admin_port, log_path=folder / f"{name}.log", name=name, concurrency=1).start()
    return envoy, f"http://127.0.0.1:{port}"


def latencies(http: httpx.Client, path: str, body: bytes, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--image-kib", type=int, default=512)
    args = parser.parse_args()
    image = base64.b64encode(b"\x89PNG" + b"\0" * (args.image_kib * 1024)).decode()
    text = {"prompt": "Once upon a time", "sampling": {"max_tokens": 64, "temperature": 0.8, "seed": 7}}
    cases = {
        "text generate": ("/v1/text:generate", {**text, "detach": False}),
        "training spec": ("/v1/training/jobs", {"layer": 3, "num_epochs": 5, "architecture": "ARCHITECTURE_TINY"}),
        f"image + {args.image_kib} KiB": ("/v1/images:generate", {"prompt": "a cat", "init_image_data": image}),
    }
    with tempfile.TemporaryDirectory(prefix="genmesh-bench-") as folder:
        plain, plain_url = start(Path(folder), "plain", BUFFER_ONLY)
        strict, strict_url = start(Path(folder), "strict", render_lua(DESCRIPTOR_PATH))
        try:
            with httpx.Client(base_url=plain_url) as to_plain, httpx.Client(base_url=strict_url) as to_strict:
                print(f"{'body':18} {'without p50/p90 us':>20} {'with p50/p90 us':>18} {'added p50 us':>13}")
                added_text = 0.0
                for name, (path, body) in cases.items():
                    data = json.dumps(body).encode()
                    latencies(to_plain, path, data, 50)  # warm both
                    latencies(to_strict, path, data, 50)
                    without, with_check = [], []
                    for _ in range(10):  # interleaved, so drift in machine load hits both alike
                        without += latencies(to_plain, path, data, args.requests // 10)
                        with_check += latencies(to_strict, path, data, args.requests // 10)
                    p50 = [statistics.median(times) * 1e6 for times in (without, with_check)]
                    p90 = [statistics.quantiles(times, n=10)[-1] * 1e6 for times in (without, with_check)]
                    added = p50[1] - p50[0]
                    added_text = added if name == "text generate" else added_text
                    print(f"{name:18} {p50[0]:9.0f}/{p90[0]:<9.0f} {p50[1]:8.0f}/{p90[1]:<9.0f} {added:13.0f}")
        finally:
            strict.stop()
            plain.stop()
    print(f"added_us_p50={added_text:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
