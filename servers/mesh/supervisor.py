"""Keeps the local mesh's children running, as a process manager does.

A child that fails (a crash, SIGKILL, out of memory: any exit but a clean one) is started again on the same
command line (so on the same port: the gateway's config stays valid) after a backoff that doubles
with each quick crash. One that crashes ``give_up_after`` times, each within ``quick_seconds`` of
its start, is given up on and reported; the rest of the mesh keeps serving. While a service is
down, the gateway's health checks route nothing to it and callers get UNAVAILABLE at once. A clean
exit (code 0, e.g. a server drained by SIGTERM on purpose) is respected, as systemd's on-failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from servers.mesh.processes import ManagedProcess

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 15.0
    quick_seconds: float = 60.0  # a crash sooner than this after a start counts as a quick crash
    give_up_after: int = 5  # quick crashes in a row


@dataclass
class _Watched:
    process: ManagedProcess
    started_at: float = field(default_factory=time.monotonic)
    quick_crashes: int = 0
    restart_at: float | None = None
    restarts: int = 0
    given_up: bool = False
    exited_cleanly: bool = False


class Supervisor:
    """Watches children from a background thread; ``report`` receives one line per event."""

    def __init__(
        self, policy: RestartPolicy | None = None, report: Callable[[str], None] | None = None, interval: float = 0.2
    ) -> None:
        self.policy = policy or RestartPolicy()
        self._report = report or (lambda line: None)
        self._interval = interval
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, process: ManagedProcess) -> None:
        with self._lock:
            self._watched[process.name] = _Watched(process)

    def restarts(self, name: str) -> int:
        return self._watched[name].restarts

    def given_up(self) -> list[str]:
        return [name for name, watched in self._watched.items() if watched.given_up]

    def start(self) -> Supervisor:
        self._thread = threading.Thread(target=self._run, name="mesh-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop supervising (before the children are stopped on purpose)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                for name, watched in self._watched.items():
                    self._check(name, watched, time.monotonic())

    def _check(self, name: str, watched: _Watched, now: float) -> None:
        if watched.given_up or watched.exited_cleanly or watched.process.alive():
            return
        if watched.restart_at is None:  # just found dead
            code = watched.process.returncode()
            if code == 0:
                watched.exited_cleanly = True
                log.info("process_exited_cleanly", process=name)
                self._report(f"{name} exited cleanly (exit code 0); not restarting it")
                return
            quick = now - watched.started_at < self.policy.quick_seconds
            watched.quick_crashes = watched.quick_crashes + 1 if quick else 1
            if watched.quick_crashes >= self.policy.give_up_after:
                watched.given_up = True
                log.error("process_given_up", process=name, code=code, crashes=watched.quick_crashes)
                self._report(
                    f"{name} crashed {watched.quick_crashes} times in a row (exit code {code}); not restarting it. "
                    f"The rest of the mesh keeps serving. See {watched.process.log_path}"
                )
                return
            backoff = min(
                self.policy.initial_backoff_seconds * 2 ** (watched.quick_crashes - 1), self.policy.max_backoff_seconds
            )
            watched.restart_at = now + backoff
            log.warning("process_crashed", process=name, code=code, restart_in_seconds=backoff)
            self._report(f"{name} exited unexpectedly (exit code {code}); restarting it in {backoff:g} s")
            return
        if now >= watched.restart_at:
            watched.restart_at = None
            watched.started_at = now
            try:
                watched.process.start()
            except Exception:  # e.g. Envoy not ready in time: counted as a crash on the next check
                log.exception("process_restart_failed", process=name)
                return
            finally:
                # Counted once the new process runs (or failed to): a caller that sees the count
                # rise never finds the dead one still in place.
                watched.restarts += 1
            log.info("process_restarted", process=name, restarts=watched.restarts)
