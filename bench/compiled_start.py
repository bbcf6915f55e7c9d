"""What the benches report about a server started with ``--compile``: how long its compile and
warm-up took (from the server's own ``compiled`` log line), how long the mesh took to be ready,
and the same for a second start on the same data folder (inductor's cache warm)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from servers.mesh.launcher import Mesh


@dataclass(frozen=True)
class Start:
    ready_s: float  # from starting the mesh to the gateway routing to the server
    compile_s: float | None  # the server's compile + warm-up (None: no compiled line, e.g. eager)
    graphs: int | None
    failed: bool  # the compile failed and the server runs eagerly


def compile_flags(enabled: bool, warmup: str, cache_dir: Path) -> list[str]:
    """Server flags: compile, warm up ``warmup`` (WxH[xN]) only, keep kernels in ``cache_dir``."""
    if not enabled:
        return []
    return ["--compile", "--compile-warmup", warmup, "--compile-cache-dir", str(cache_dir)]


def last_compile_event(log_path: Path) -> dict | None:
    events = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") in ("compiled", "compile_failed_running_eager"):
                events.append(event)
    return events[-1] if events else None


def start(make_mesh: Callable[[], Mesh], service: str) -> tuple[Mesh, Start]:
    started = time.perf_counter()
    mesh = make_mesh().start()
    ready = time.perf_counter() - started
    event = last_compile_event(mesh.logs / f"{service}.log")
    if event is None:
        return mesh, Start(ready, None, None, False)
    if event["event"] != "compiled":
        return mesh, Start(ready, None, None, True)
    return mesh, Start(ready, event["seconds"], event["graphs"], False)


def describe(label: str, result: Start) -> str:
    if result.failed:
        return f"{label}: ready in {result.ready_s:.1f} s; the COMPILE FAILED, the server runs eagerly (see its log)"
    if result.compile_s is None:
        return f"{label}: ready in {result.ready_s:.1f} s"
    compiled = f"compile + warm-up {result.compile_s:.1f} s ({result.graphs} graphs)"
    return f"{label}: ready in {result.ready_s:.1f} s, {compiled}"
