"""Outbound connections that go only where they were checked to go.

A server that connects to hosts a caller chose (webhook POSTs; model pulls and their redirects)
resolves the name once, checks the addresses it got (``internal``: loopback, private, link-local
such as cloud metadata at 169.254.169.254, ...), and connects to one of those addresses, never to
the name again: a DNS answer that changes in between (rebinding) cannot swap in another address.
The Host header, TLS SNI and the certificate check stay the URL's host. The urllib ``opener`` made
here speaks http and https only and never goes through a proxy (what is allowed is decided here,
not by a proxy from the environment).
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Resolver = Callable[[str, int], Sequence[str]]
# socket.create_connection's shape: ((host, port), timeout) -> a connected socket
Connector = Callable[[tuple[str, int], Any], socket.socket]
# Where a connection for a URL may go: the checked addresses, or None to connect by name (a host the
# operator named, reachable whatever it resolves to). Raises to refuse the URL.
Pin = Callable[[str, Resolver], Sequence[str] | None]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def internal(address: str) -> bool:
    """Whether an address is inside someone's network rather than on the public internet."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


@dataclass(frozen=True)
class Dialer:
    """How names are resolved and connections opened: the real network, unless a test routes them."""

    resolve: Resolver = resolve
    connect: Connector = socket.create_connection
    tls: ssl.SSLContext | None = field(default=None, compare=False)  # None: the system's CAs, host name checked

    def context(self) -> ssl.SSLContext:
        return self.tls or ssl.create_default_context()


DIALER = Dialer()


def _connect(dialer: Dialer, host: str, port: int, addresses: Sequence[str] | None, timeout: Any) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that answers; to ``host`` by name when None."""
    if addresses is None:
        return dialer.connect((host, port), timeout)
    error: OSError = OSError(f"{host} has no checked address")
    for address in addresses:
        try:
            return dialer.connect((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP for ``host`` (the Host header), connected to one of the checked ``addresses``."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        addresses: Sequence[str] | None,
        dialer: Dialer = DIALER,
        timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]  # http.client's default
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses, self.dialer = addresses, dialer

    def connect(self) -> None:
        self.sock = _connect(self.dialer, self.host, self.port, self.addresses, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS for ``host`` (Host header, SNI and the certificate's name), connected to one of the
    checked ``addresses``."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        addresses: Sequence[str] | None,
        dialer: Dialer = DIALER,
        timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.tls_context = context or dialer.context()
        super().__init__(host, port, timeout=timeout, context=self.tls_context)
        self.addresses, self.dialer = addresses, dialer

    def connect(self) -> None:
        raw = _connect(self.dialer, self.host, self.port, self.addresses, self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


class _PinnedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, pin: Pin, dialer: Dialer) -> None:
        super().__init__()
        self.pin, self.dialer = pin, dialer

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        addresses = self.pin(req.full_url, self.dialer.resolve)
        return self.do_open(functools.partial(PinnedHTTPConnection, addresses=addresses, dialer=self.dialer), req)


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pin: Pin, dialer: Dialer) -> None:
        super().__init__(context=dialer.context())
        self.pin, self.dialer = pin, dialer

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        addresses = self.pin(req.full_url, self.dialer.resolve)
        connection = functools.partial(PinnedHTTPSConnection, addresses=addresses, dialer=self.dialer)
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


def opener(pin: Pin, *handlers: urllib.request.BaseHandler, dialer: Dialer = DIALER) -> urllib.request.OpenerDirector:
    """A urllib opener whose every connection (each request, each redirect hop) goes where ``pin``
    says for its URL. http and https only, no proxy; redirects only with a redirect handler among
    ``handlers``."""
    director = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.UnknownHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        _PinnedHTTPHandler(pin, dialer),
        _PinnedHTTPSHandler(pin, dialer),
        *handlers,
    ):
        director.add_handler(handler)
    return director
