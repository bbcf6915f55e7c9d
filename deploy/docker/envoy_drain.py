"""Drain the local Envoy gracefully: stop taking new work, let running streams finish.

    python3 envoy_drain.py ADMIN_PORT MAX_SECONDS

Asks Envoy's admin API (127.0.0.1 only) to drain its listeners gracefully -- HTTP/2 clients get a
GOAWAY, HTTP/1.1 ones ``Connection: close`` -- then waits until no gateway request is active or
MAX_SECONDS have passed. Used by gateway-entrypoint.sh on SIGTERM (and its ``drain`` command).
Exit 0 when the gateway went idle, 1 when time ran out or the admin API did not answer.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.request

# Never through a proxy from the environment: loopback only.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ACTIVE = re.compile(r"^http\.gateway\.downstream_rq_active: (\d+)$", re.MULTILINE)


def _admin(port: int, path: str, method: str = "GET") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with _OPENER.open(request, timeout=3) as response:
        return response.read().decode("utf-8", "replace")


def active_requests(port: int) -> int:
    text = _admin(port, "/stats?filter=%5Ehttp%5C.gateway%5C.downstream_rq_active%24")
    match = _ACTIVE.search(text)
    return int(match.group(1)) if match else 0


def drain(port: int, max_seconds: float) -> bool:
    try:
        _admin(port, "/drain_listeners?graceful&inboundonly", method="POST")
    except OSError as exc:
        print(f"envoy drain: admin API on port {port} did not answer: {exc}", file=sys.stderr)
        return False
    deadline = time.monotonic() + max_seconds
    while True:
        try:
            active = active_requests(port)
        except OSError:
            return True  # Envoy is gone already
        if active == 0:
            return True
        if time.monotonic() >= deadline:
            print(f"envoy drain: {active} requests still active after {max_seconds:g} s", file=sys.stderr)
            return False
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if drain(int(argv[1]), float(argv[2])) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
