"""--tls-dir: the files are checked when the settings are parsed (a bad one is an error naming it), the
default stays plaintext, and the agent dials its services with the same certificate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from servers.agent.settings import AgentSettings
from servers.agent.upstreams import Upstreams
from servers.runtime.settings import ServerSettings, parse_settings
from servers.runtime.tls import TlsFiles, TlsFilesError
from tests.support.certificates import make_certificates


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    make_certificates(folder / "mesh", {"agent": "agent", "text": "DNS:text,IP:127.0.0.1"})
    make_certificates(folder / "other", {"agent": "agent"}, ca_name="another CA")
    return folder


def test_plaintext_by_default() -> None:
    settings = parse_settings(ServerSettings, [], environ={"GENMESH_TLS_DIR": "", "GENMESH_PLAINTEXT_HEALTH_PORT": ""})
    assert settings.tls_dir is None and settings.tls() is None and settings.plaintext_health_port is None
    assert AgentSettings().tls() is None


def test_tls_dir_from_flag_and_environment(pki: Path) -> None:
    folder = pki / "mesh" / "agent"
    from_env = parse_settings(ServerSettings, [], environ={"GENMESH_TLS_DIR": str(folder)})
    from_flag = parse_settings(ServerSettings, ["--tls-dir", str(folder), "--plaintext-health-port", "8081"], {})
    assert from_env.tls_dir == from_flag.tls_dir == folder and from_flag.plaintext_health_port == 8081
    tls = from_flag.tls()
    assert tls is not None and tls.ca == (folder / "ca.crt").read_bytes()
    assert "BEGIN" not in repr(tls)  # the key never reaches a log line


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d, other: (d / "tls.key").unlink(), r"tls\.key: cannot read it \(No such file or directory\)"),
        (lambda d, other: (d / "ca.crt").write_text("not a certificate"), r"ca\.crt: not PEM"),
        (lambda d, other: (d / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n"), r"ca\.crt: not a PEM CA"),
        (lambda d, other: shutil.copy(other / "tls.key", d / "tls.key"), r"tls\.crt and .*tls\.key: .*MISMATCH"),
    ],
    ids=["missing-key", "not-pem", "bad-ca", "key-of-another-certificate"],
)
def test_a_bad_tls_file_is_a_startup_error_naming_it(
    pki: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage, message: str
) -> None:
    folder = _copy(pki / "mesh" / "agent", tmp_path / "tls")
    breakage(folder, pki / "other" / "agent")
    with pytest.raises(TlsFilesError, match=message):
        TlsFiles.load(folder)
    with pytest.raises(SystemExit) as exit_code:
        parse_settings(AgentSettings, ["--tls-dir", str(folder)], {}, prog="python -m servers agent")
    assert exit_code.value.code == 2
    assert str(folder) in capsys.readouterr().err


def test_a_server_process_with_a_missing_tls_file_exits_naming_it(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "servers", "agent", "--port", "0", "--tls-dir", str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert result.returncode == 2, result.stderr
    assert f"{tmp_path / 'tls.crt'}: cannot read it (No such file or directory)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def text_server(pki: Path) -> Iterator[int]:
    """A TLS server demanding a client certificate from the mesh CA, SERVING for TextService."""
    tls = TlsFiles.load(pki / "mesh" / "text")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("genmesh.text.v1.TextService", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    server.start()
    yield port
    server.stop(grace=None)


@pytest.mark.parametrize(
    ("client", "expected"),
    [("mesh", "SERVING"), ("other", "no answer: UNAVAILABLE"), (None, "no answer: UNAVAILABLE")],
    ids=["certificate-of-the-mesh-ca", "certificate-of-another-ca", "plaintext"],
)
def test_the_agent_dials_its_services_with_its_certificate(
    pki: Path, text_server: int, client: str | None, expected: str
) -> None:
    tls = TlsFiles.load(pki / client / "agent") if client else None
    upstreams = Upstreams({"text": f"127.0.0.1:{text_server}"}, tls=tls)
    try:
        assert upstreams.status("text") == expected
    finally:
        upstreams.close()
