"""What ``genmesh up`` claims before it starts anything: its data folder (a lock) and the gateway
port. A second ``genmesh up`` on either is told in one line what is in the way and stops at once,
leaving the first mesh undisturbed (it would otherwise start an S3 server on the same files, or
every service before Envoy finds the port taken)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = "genmesh-up.lock"


class InTheWay(RuntimeError):
    """Another process holds what this ``genmesh up`` needs; the message says which and who."""


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/genmesh-up.lock``, which holds the owner's pid. The
    kernel drops the lock when its process dies, so a crashed mesh never leaves the folder locked."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise InTheWay(f"the data folder {self.path.parent} is in use by genmesh up pid {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise ``InTheWay`` naming who listens on ``host:port``, if anyone does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Envoy binds: connections of a mesh just stopped (TIME_WAIT) are not in the way; on Linux a
        # listener still is, even one on 0.0.0.0.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise InTheWay(f"cannot use port {port} on {host}: {exc.strerror or exc}") from None
            pid = launcher_of(listener_pid(port))
            who = f"another genmesh up? pid {pid}" if pid else "another genmesh up, or another program"
            raise InTheWay(f"port {port} is in use ({who})") from None


def listener_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The pid of a process listening on TCP ``port`` (Linux: /proc; only processes we may inspect)."""
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


def launcher_of(pid: int | None, proc: Path = Path("/proc")) -> int | None:
    """The ``genmesh up`` behind a listener: the gateway port is held by its Envoy child, so an Envoy's
    parent is named; any other listener is named itself."""
    if pid is None:
        return None
    try:
        name = (proc / str(pid) / "comm").read_text().strip()
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return pid
    parent = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
    return parent if name == "envoy" and parent > 1 else pid
