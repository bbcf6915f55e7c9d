"""What `genmesh up` claims before it starts anything: the data folder's lock and the gateway port,
each refused in one line naming who holds it (real locks, real sockets)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from servers.mesh.claims import DataDirLock, InTheWay, check_port_free, launcher_of, listener_pid


def test_a_locked_data_folder_names_the_pid_holding_it(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path).acquire()
    try:
        assert (tmp_path / "genmesh-up.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(InTheWay) as raised:
            DataDirLock(tmp_path).acquire()  # another open file: the lock holds against it
        assert str(raised.value) == f"the data folder {tmp_path} is in use by genmesh up pid {os.getpid()}"
    finally:
        first.release()
    DataDirLock(tmp_path).acquire().release()  # released: free again


def test_a_dead_holder_leaves_the_folder_free(tmp_path: Path) -> None:
    # The kernel drops a flock with its process: a crashed `genmesh up` never blocks the next one.
    code = f"from servers.mesh.claims import DataDirLock; DataDirLock({str(tmp_path)!r}).acquire()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env={**os.environ})
    DataDirLock(tmp_path).acquire().release()


def test_a_taken_port_names_its_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert listener_pid(port) == os.getpid() and launcher_of(os.getpid()) == os.getpid()
        with pytest.raises(InTheWay) as raised:
            check_port_free(port)
        assert str(raised.value) == f"port {port} is in use (another genmesh up? pid {os.getpid()})"
    check_port_free(port)  # closed: free


def test_a_port_left_in_time_wait_is_free() -> None:
    """Right after a mesh stops, its gateway port holds closed connections (TIME_WAIT): not in the way."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Envoy's listener (Linux needs both)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            served, _ = listener.accept()
            served.close()  # the server side closes first: its end waits in TIME_WAIT on the port
            client.recv(1)
    check_port_free(port)


def test_a_listener_on_every_address_is_in_the_way() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        with pytest.raises(InTheWay, match="is in use"):
            check_port_free(listener.getsockname()[1])


def test_an_envoy_listener_names_the_launcher_that_started_it(tmp_path: Path) -> None:
    """The gateway port is held by `genmesh up`'s Envoy child: its parent is the one to name."""
    proc = tmp_path / "proc"
    (proc / "4321").mkdir(parents=True)
    (proc / "4321" / "comm").write_text("envoy\n")
    (proc / "4321" / "status").write_text("Name:\tenvoy\nPPid:\t1200\n")
    assert launcher_of(4321, proc) == 1200
    assert launcher_of(None, proc) is None
    assert launcher_of(999, proc) == 999  # gone or unreadable: the listener itself
