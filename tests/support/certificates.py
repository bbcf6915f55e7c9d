"""Test certificates made with the openssl command line, laid out as a cert-manager Secret holds them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_certificates(folder: Path, names: dict[str, str], ca_name: str = "genmesh test CA") -> None:
    """A private CA and, per entry of ``names`` (file stem -> SAN), a certificate it signed:
    ``<stem>/tls.crt``, ``<stem>/tls.key`` and ``<stem>/ca.crt``. A SAN is a DNS name ("text") or an
    openssl subjectAltName list ("DNS:text,IP:127.0.0.1"); skips the test when openssl is missing."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    folder.mkdir(parents=True, exist_ok=True)
    run("req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", f"/CN={ca_name}")
    for stem, san in names.items():
        alt_names = san if ":" in san else f"DNS:{san}"
        (folder / stem).mkdir()
        (folder / f"{stem}.ext").write_text(f"subjectAltName={alt_names}\n")
        run("req", *EC_KEY, "-keyout", f"{stem}/tls.key", "-out", f"{stem}.csr", "-subj", f"/CN={stem}")
        run("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{stem}/tls.crt", "-days", "1", "-extfile", f"{stem}.ext")  # fmt: skip
        shutil.copy(folder / "ca.crt", folder / stem / "ca.crt")
