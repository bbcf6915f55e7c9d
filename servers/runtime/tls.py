"""Mutual TLS material for the gRPC links inside the mesh (gateway -> servers, agent -> services).

One folder holds what a cert-manager Secret of type kubernetes.io/tls holds: ``tls.crt`` (this
component's certificate), ``tls.key`` (its private key) and ``ca.crt`` (the private CA that signed
every component's certificate). The same three files make a server's credentials (it demands a
client certificate from that CA) and a client's (it presents its certificate and trusts only that CA).
The files are read and checked once at start: a problem is a startup error naming the file, never a
failed handshake on the first call. A renewed certificate takes effect on the next start.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import grpc

CERTIFICATE = "tls.crt"
PRIVATE_KEY = "tls.key"
CA = "ca.crt"


class TlsFilesError(ValueError):
    """A file of the TLS folder is missing, unreadable or not what it should be (the message names it)."""


@dataclass(frozen=True)
class TlsFiles:
    folder: Path
    certificate: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    ca: bytes = field(repr=False)

    @classmethod
    def load(cls, folder: Path) -> TlsFiles:
        """Read ``tls.crt``, ``tls.key`` and ``ca.crt`` from ``folder`` and check that they parse and the
        key belongs to the certificate; ``TlsFilesError`` names the file at fault."""
        files = {name: _read(folder / name) for name in (CERTIFICATE, PRIVATE_KEY, CA)}
        # grpc reports bad PEM only as a failed handshake (or a bare "Failed to add port"): ask OpenSSL now.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_verify_locations(cadata=files[CA].decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise TlsFilesError(f"{folder / CA}: not a PEM CA certificate ({exc.reason or exc})") from None
        try:
            # A key behind a passphrase would make OpenSSL prompt on the terminal: answer "" (it fails).
            context.load_cert_chain(folder / CERTIFICATE, folder / PRIVATE_KEY, password=lambda: b"")
        except ssl.SSLError as exc:
            raise TlsFilesError(
                f"{folder / CERTIFICATE} and {folder / PRIVATE_KEY}: not a PEM certificate and its private key "
                f"({exc.reason or exc})"
            ) from None
        return cls(folder, files[CERTIFICATE], files[PRIVATE_KEY], files[CA])

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serve TLS and refuse any caller without a certificate signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate)], root_certificates=self.ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Present this certificate; accept only a server whose certificate chains to the CA and names
        the host dialled (``text`` for ``text:50051``)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.private_key, certificate_chain=self.certificate
        )


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsFilesError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data:
        raise TlsFilesError(f"{path}: not PEM (no -----BEGIN line)")
    return data
