"""Child processes for the local mesh and the tests: started with a log file, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it) and that this process has not
    handed out before: a port is often bound long after it is picked (the gateway's, after every
    server has started), and nothing else in the mesh may pick it meanwhile."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(ready: Callable[[], bool], *, timeout: float, what: str, process: ManagedProcess | None = None) -> None:
    """Poll ``ready`` until it returns True; fail early if ``process`` dies meanwhile."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if process is not None and not process.alive():
            raise RuntimeError(
                f"{what} exited with code {process.returncode()} before it was ready; see {process.log_path}"
            )
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what} was not ready after {timeout:.0f}s; see {process.log_path if process else 'logs'}"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def stop_together(processes: Sequence[ManagedProcess], timeout: float) -> None:
    """SIGTERM to each at once, then wait for each (SIGKILL ``timeout`` seconds from now): they drain
    side by side, so the group takes as long as its slowest member, not the sum of them all."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.stop(timeout=max(0.0, deadline - time.monotonic()))


class ManagedProcess:
    """One child process. Its stdout and stderr go to ``log_path``; it is stopped by PID."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._terminated = False

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self._popen = subprocess.Popen(
                self.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                # Own process group: Ctrl-C in the launcher's terminal reaches the launcher only,
                # which then stops every child in order.
                start_new_session=True,
            )
        self._terminated = False
        log.info("process_started", process=self.name, pid=self._popen.pid, log=str(self.log_path))
        return self

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def terminate(self) -> None:
        """SIGTERM, once (a second one tells some programs to stop without draining)."""
        if self._popen is not None and self._popen.poll() is None and not self._terminated:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self.terminate()
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("process_kill", process=self.name, pid=self._popen.pid)
                with contextlib.suppress(ProcessLookupError):
                    self._popen.kill()
                self._popen.wait(timeout=5)
        log.info("process_stopped", process=self.name, pid=self._popen.pid, code=self._popen.returncode)
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL at once (tests use it to simulate a crash)."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()
            self._popen.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
