"""free_port never hands out a port twice in one process: the mesh picks the gateway's port first and
binds it last, after every server has picked its own."""

from __future__ import annotations

import socket

from servers.mesh.processes import free_port


def test_ports_are_free_and_never_handed_out_twice() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed
