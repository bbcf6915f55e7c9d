"""``genmesh up``: the whole mesh as local processes on loopback.

Order: the S3 server, each chosen service (waiting until its health check says SERVING), then
Envoy in front of them. Once up, a supervisor restarts any child that dies (servers/mesh/
supervisor.py) while the rest keeps serving. Ctrl-C or SIGTERM stops everything in reverse
order, by PID. All state (S3 data, models, generated keys, logs, the rendered gateway config)
lives in one data folder.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genmesh.local import DEFAULT_DATA_DIR, KEYS_FILE
from genmesh.services import BY_NAME, start_order, stop_waves
from servers.mesh.api_keys import KeySource, RateLimit
from servers.mesh.claims import DataDirLock, check_port_free
from servers.mesh.envoy import (
    API_KEYS_ENV,
    API_KEYS_FILE_ENV,
    LOCAL_OPENER,
    SERVICES,
    Envoy,
    render_envoy_config,
)
from servers.mesh.gpus import share_one_gpu
from servers.mesh.keys_sync import KeySync
from servers.mesh.processes import ManagedProcess, free_port, stop_together, wait_until
from servers.mesh.s3 import S3Server
from servers.mesh.supervisor import Supervisor
from servers.registry import SERVERS
from servers.web.settings import LISTED as WEB_LISTED
from servers.web.settings import UPSTREAMS as WEB_UPSTREAMS

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR_PATH = REPO_ROOT / "deploy" / "envoy" / "genmesh.pb"
# First start may assemble or build models; later starts take seconds.
SERVICE_START_TIMEOUT = 600.0
# A server's drain (GENMESH_DRAIN_SECONDS, 30 s by default) plus its own shutdown, before SIGKILL.
SERVER_STOP_TIMEOUT = 60.0
KEEP_ALIVE_ENV = "GENMESH_AGENT_KEEP_ALIVE_SECONDS"
MAX_LOCAL_REPLICAS = 8


def implemented_services() -> list[str]:
    """Every service with a server (``servers/registry.py``), in the declared order."""
    return [name for name in SERVICES if name in SERVERS]


def write_private(path: Path, text: str) -> None:
    """Write a secret file with mode 600 from the start (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


@dataclass(frozen=True)
class LaunchOptions:
    port: int = 8080
    services: tuple[str, ...] = ("text",)
    data_dir: Path = DEFAULT_DATA_DIR
    threads: int = 2
    rate_limit_rps: int = 100
    rate_limit_burst: int = 200
    service_args: dict[str, list[str]] = field(default_factory=dict)  # extra flags per service
    replicas: dict[str, int] = field(default_factory=dict)  # processes per service (default 1)

    @classmethod
    def build(cls, *, port: int, services: str, data_dir: Path | None, replicas: str = "") -> LaunchOptions:
        available = implemented_services()
        chosen = tuple(dict.fromkeys(name.strip() for name in services.split(",") if name.strip())) or tuple(available)
        unknown = [name for name in chosen if name not in available]
        if not chosen or unknown:
            raise SystemExit(f"--services: choose from {', '.join(available)} (got {services!r})")
        threads = int(os.environ.get("GENMESH_THREADS", "2"))
        return cls(
            port=port,
            services=chosen,
            data_dir=(data_dir or DEFAULT_DATA_DIR).expanduser(),
            threads=threads,
            replicas=parse_replicas(replicas, chosen),
        )

    def replica_count(self, name: str) -> int:
        return self.replicas.get(name, 1)


def parse_replicas(text: str, services: tuple[str, ...]) -> dict[str, int]:
    """``image=2,text=2`` -> {"image": 2, "text": 2}; names among ``services``, counts 1..MAX_LOCAL_REPLICAS."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = (piece.strip() for piece in item.partition("="))
        valid = sep and name in services and name not in counts and re.fullmatch(r"[0-9]{1,2}", count)
        if not valid or not 1 <= int(count) <= MAX_LOCAL_REPLICAS:
            raise SystemExit(
                f"--replicas: expected service=count, once per service started here ({', '.join(services)}), with a "
                f"count of 1 to {MAX_LOCAL_REPLICAS} (got {item!r})"
            )
        counts[name] = int(count)
    return counts


@dataclass
class ApiKeys:
    keys: dict[str, str] = field(repr=False)
    generated_file: Path | None = None  # set when this run created the key
    source: KeySource = field(default_factory=KeySource)  # read again while running: keys rotate live


def resolve_api_keys(data_dir: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> ApiKeys:
    """Keys from GENMESH_API_KEYS / GENMESH_API_KEYS_FILE; else the data folder's key file; else a new
    random key written there (mode 600). Never a built-in default."""
    if environ.get(API_KEYS_ENV) or environ.get(API_KEYS_FILE_ENV):
        source = KeySource.from_environ(environ)
        return ApiKeys(source.load().keys, source=source)
    keys_file = data_dir / KEYS_FILE
    if keys_file.exists():
        source = KeySource(file=keys_file)
        return ApiKeys(source.load().keys, source=source)
    key = "gm_" + secrets.token_urlsafe(32)
    write_private(
        keys_file,
        "# genmesh API keys: one client=key per line, optionally with its own rate limit (rps=N burst=N).\n"
        "# Edits apply within seconds while genmesh up runs.\n"
        f"local={key} admin\n",
    )
    return ApiKeys({"local": key}, generated_file=keys_file, source=KeySource(file=keys_file))


def s3_credentials(data_dir: Path) -> tuple[str, str]:
    """The local S3 server's credentials: generated once, kept in the data folder (mode 600)."""
    path = data_dir / "s3-credentials.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return stored["access_key"], stored["secret_key"]
    access, secret = "genmesh-" + secrets.token_hex(6), secrets.token_urlsafe(32)
    write_private(path, json.dumps({"access_key": access, "secret_key": secret}))
    return access, secret


def grpc_target(ports: list[int]) -> str:
    """A gRPC target naming every replica (the agent's channels round-robin over them)."""
    if len(ports) == 1:
        return f"127.0.0.1:{ports[0]}"
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)


def metrics_urls(services: list[str], metrics_ports: dict[str, int], replicas: dict[str, list[int]]) -> str:
    """The web front door's ``--metrics-urls``: every replica's /metrics on loopback, ``name=host:port,...``
    (replica 0 is the process ``name``, replica i > 0 ``name-i``)."""
    return ",".join(
        f"{name}=127.0.0.1:{metrics_ports[name if replica == 0 else f'{name}-{replica}']}"
        for name in services
        for replica in range(len(replicas[name]))
    )


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def web_answers(port: int) -> bool:
    with LOCAL_OPENER.open(f"http://127.0.0.1:{port}/livez", timeout=2) as response:
        return response.status == 200


def health_status(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


class Mesh:
    """The running local mesh. ``start()`` returns once the gateway routes to every service."""

    def __init__(self, options: LaunchOptions) -> None:
        self.options = options
        self.data_dir = options.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.api_keys = ApiKeys({})
        self.s3: S3Server | None = None
        # Keyed by process: a service's first replica is "text", the next ones "text-1", "text-2"...
        self.servers: dict[str, ManagedProcess] = {}
        self.server_ports: dict[str, int] = {}
        self.metrics_ports: dict[str, int] = {}  # each server's Prometheus /metrics port, on loopback
        self.replica_ports: dict[str, list[int]] = {}  # service -> its replicas' gRPC ports, in replica order
        self.envoy: Envoy | None = None
        self.web: ManagedProcess | None = None  # the web front door (OpenAI's routes), when a service it calls runs
        self.web_port = 0
        self.key_sync: KeySync | None = None
        self.lock: DataDirLock | None = None  # held from start() to stop()
        self.supervisor = Supervisor(report=lambda line: print(f"genmesh up: {line}", file=sys.stderr, flush=True))

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.options.port}"

    @property
    def api_key(self) -> str:
        return next(iter(self.api_keys.keys.values()))

    def service_env(self) -> dict[str, str]:
        assert self.s3 is not None
        return {
            "GENMESH_S3_ENDPOINT": self.s3.endpoint,
            "GENMESH_S3_ACCESS_KEY": self.s3.access_key,
            "GENMESH_S3_SECRET_KEY": self.s3.secret_key,
            # Media is signed for the gateway's address, which routes it to the S3 server: a browser
            # (the web console) loads it from the same origin as the API, one port to expose.
            "GENMESH_S3_PUBLIC_ENDPOINT": os.environ.get("GENMESH_S3_PUBLIC_ENDPOINT") or self.url,
            "GENMESH_DATA_DIR": str(self.data_dir),
            "GENMESH_THREADS": str(self.options.threads),
            "GENMESH_LOG_FORMAT": "json",
            # Loopback is plaintext: a TLS setting exported for a cluster must not leak into the local mesh.
            "GENMESH_TLS_DIR": "",
            "GENMESH_PLAINTEXT_HEALTH_PORT": "",
            # The servers read each key's webhook default and secret from the gateway's keys.
            "GENMESH_API_KEYS_FILE": str(self.api_keys.source.file or ""),
        }

    def start(self) -> Mesh:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Before anything is written or started: a mesh already running on this folder or port is
        # named in one line, and left alone.
        self.lock = DataDirLock(self.data_dir).acquire()
        try:
            check_port_free(self.options.port)
            os.chmod(self.data_dir, 0o700)
            self.api_keys = resolve_api_keys(self.data_dir)
            access, secret = s3_credentials(self.data_dir)
            self.s3 = S3Server(self.data_dir / "s3", access, secret, log_path=self.logs / "s3.log").start()
            for name in start_order(self.options.services):  # a service that calls others after them
                self._start_service(name)
            for name, process in self.servers.items():
                port = self.server_ports[name]
                wait_until(
                    lambda port=port: health_status(port) == health_pb2.HealthCheckResponse.SERVING,
                    timeout=SERVICE_START_TIMEOUT,
                    what=f"the {name} server",
                    process=process,
                )
                log.info("service_ready", service=name, port=port)
            self._start_web()
            self._start_envoy()
        except BaseException:
            self.stop()
            raise
        for process in self.children():
            self.supervisor.watch(process)
        self.supervisor.start()
        return self

    def children(self) -> list[ManagedProcess]:
        """Every child process, in start order."""
        s3 = self.s3._process if self.s3 is not None else None
        return [process for process in (s3, *self.servers.values(), self.web, self.envoy) if process is not None]

    def _start_service(self, name: str) -> None:
        """Every replica of ``name``; each knows the others' addresses (GENMESH_PEERS) to forward calls
        about their jobs, and the gateway balances calls over all of them."""
        ports = [free_port() for _ in range(self.options.replica_count(name))]
        peers = ",".join(f"127.0.0.1:{port}" for port in ports) if len(ports) > 1 else ""
        self.replica_ports[name] = ports
        for replica, port in enumerate(ports):
            process = name if replica == 0 else f"{name}-{replica}"
            metrics_port = free_port()
            argv = [
                *self._service_argv(name),
                f"--port={port}",
                f"--metrics-port={metrics_port}",
                f"--replica={replica}",
                f"--peers={peers}",
            ]
            self.servers[process] = ManagedProcess(
                process, argv, log_path=self.logs / f"{process}.log", env=self.service_env()
            ).start()
            self.server_ports[process] = port
            self.metrics_ports[process] = metrics_port

    def _service_argv(self, name: str) -> list[str]:
        argv = [sys.executable, "-m", "servers", name]
        # The services it calls (the declaration's ``calls``), directly, never through the gateway.
        calls = BY_NAME[name].calls
        argv += [
            f"--{other}-url={grpc_target(self.replica_ports[other])}" for other in calls if other in self.server_ports
        ]
        if name == "agent" and share_one_gpu(self.options.services) and KEEP_ALIVE_ENV not in os.environ:
            argv.append("--keep-alive-seconds=0")  # the models take turns on the one GPU
        return argv + self.options.service_args.get(name, [])

    def _start_web(self) -> None:
        """The web front door (servers/web: OpenAI's routes), calling the servers directly as the agent
        does. It is up once its /livez answers; /health then follows the services it calls."""
        called = [name for name in (*WEB_UPSTREAMS, *WEB_LISTED) if name in self.replica_ports]
        if not called:
            return
        self.web_port = free_port()
        argv = [sys.executable, "-m", "servers.web", f"--port={self.web_port}"]
        argv += [f"--{name}-url={grpc_target(self.replica_ports[name])}" for name in called]
        # Its GET /v1/status reads the servers' queue depth and memory from their /metrics (loopback).
        argv.append(f"--metrics-urls={metrics_urls(called, self.metrics_ports, self.replica_ports)}")
        self.web = ManagedProcess("web", argv, log_path=self.logs / "web.log", env=self.service_env()).start()
        wait_until(lambda: web_answers(self.web_port), timeout=60, what="the web front door", process=self.web)
        log.info("service_ready", service="web", port=self.web_port)

    def _start_envoy(self) -> None:
        admin_port = free_port()
        # Keys and per-key quotas live in files Envoy watches; the sync rewrites them when the
        # keys file changes, so keys rotate without restarting Envoy (servers/mesh/keys_sync.py).
        default_rate = RateLimit(self.options.rate_limit_rps, self.options.rate_limit_burst)
        self.key_sync = KeySync(self.api_keys.source, self.data_dir / "gateway-keys", default_rate)
        self.key_sync.sync()
        config = render_envoy_config(
            listen_port=self.options.port,
            admin_port=admin_port,
            descriptor_path=DESCRIPTOR_PATH,
            api_keys=self.api_keys.keys,
            upstreams={name: [("127.0.0.1", port) for port in ports] for name, ports in self.replica_ports.items()},
            rate_limit_rps=default_rate.rps,
            rate_limit_burst=default_rate.burst,
            keys_dir=self.key_sync.keys_dir,
            web=[("127.0.0.1", self.web_port)] if self.web is not None else [],
            media=[_host_port(self.s3.endpoint)] if self.s3 is not None else [],
        )
        config_path = self.data_dir / "envoy.yaml"
        write_private(config_path, config)
        self.envoy = Envoy(config_path, admin_port=admin_port, log_path=self.logs / "envoy.log").start()
        self.key_sync.start()
        # Ready means the listener is up; wait until its health checks route to every service too.
        wait_until(self._gateway_routes_all, timeout=60, what="the gateway's health checks", process=self.envoy)

    def _gateway_routes_all(self) -> bool:
        """True once Envoy's active health checks mark every service's endpoint healthy."""
        assert self.envoy is not None
        with LOCAL_OPENER.open(f"{self.envoy.admin_url}/clusters?format=json", timeout=2) as response:
            clusters = json.load(response)["cluster_statuses"]
        for cluster in clusters:
            if cluster["name"] not in self.replica_ports and not (cluster["name"] == "web" and self.web):
                continue
            hosts = cluster.get("host_statuses", [])
            if not hosts or any(
                host["health_status"].get("eds_health_status") != "HEALTHY"
                or set(host["health_status"]) - {"eds_health_status"}
                for host in hosts
            ):
                return False
        return True

    def stop(self) -> None:
        self.supervisor.stop()  # from here on, an exit is on purpose
        if self.key_sync is not None:
            self.key_sync.stop()
        if self.envoy is not None:
            self.envoy.stop()
        if self.web is not None:
            self.web.stop()
        # Servers drain their running jobs first; side by side, each after the servers calling it.
        for wave in stop_waves(list(self.replica_ports)):
            names = [name if index == 0 else f"{name}-{index}" for name in wave
                     for index in range(len(self.replica_ports[name]))]  # fmt: skip
            stop_together([self.servers[name] for name in names if name in self.servers], SERVER_STOP_TIMEOUT)
        if self.s3 is not None:
            self.s3.stop()
        if self.lock is not None:
            self.lock.release()

    def _services_line(self) -> str:
        return ", ".join(
            name if len(ports) == 1 else f"{name} ({len(ports)} replicas)" for name, ports in self.replica_ports.items()
        )

    def _console_line(self) -> str:
        if self.web is None:
            return ""
        return f"Web console: http://{self.url}/ui/ (open it in a browser and paste the API key)\n"

    def _openai_hint(self) -> str:
        if self.web is None:
            return ""
        return (
            f"  Any OpenAI client: base_url=http://{self.url}/v1 with the key above, e.g.\n"
            f'  curl -H "Authorization: Bearer $GENMESH_API_KEY" http://{self.url}/v1/models\n'
        )

    def banner(self) -> str:
        key_line = (
            f"API key (new, shown once; stored in {self.api_keys.generated_file}):\n    {self.api_key}"
            if self.api_keys.generated_file
            else "API key: from GENMESH_API_KEYS / GENMESH_API_KEYS_FILE, or the data folder's api-keys file"
        )
        genmesh, grpcurl = (command_name(name) for name in ("genmesh", "grpcurl"))
        examples = {
            "text": f'{genmesh} text "Once upon a time" --max-tokens 32',
            "image": f'{genmesh} image "a lighthouse at dusk" -o lighthouse.png',
            "video": f'{genmesh} video "waves on a beach" -o waves.mp4 --frames 16 --fps 8',
            "training": f"{genmesh} synthetic-data --num-images 40 --preset gaussian-noise\n"
            f"  {genmesh} train --layer 1 --architecture tiny --epochs 5 --patch-size 64",
        }
        # The CLI's default is 127.0.0.1:8080: on another port the examples need the URL too.
        url_hint = "" if self.options.port == 8080 else f"; export GENMESH_URL={self.url}"
        tries = "\n".join(f"  {examples[name]}" for name in self.servers if name in examples)
        scrapes = "\n".join(f"  {name}: http://127.0.0.1:{port}/metrics" for name, port in self.metrics_ports.items())
        if self.envoy is not None:
            scrapes += f"\n  gateway (Envoy): {self.envoy.admin_url}/stats/prometheus"
        return f"""
genmesh is up: gateway http://{self.url} (gRPC and REST), services: {self._services_line()}
{key_line}
{self._console_line()}Data folder: {self.data_dir} (logs in {self.logs})
Prometheus metrics (loopback only):
{scrapes}

Try it (set the key first: export GENMESH_API_KEY=...{url_hint}):
{tries}
  {grpcurl} -plaintext -H "x-api-key: $GENMESH_API_KEY" {self.url} list
  curl -N -H "x-api-key: $GENMESH_API_KEY" http://{self.url}/v1/text:generate \\
       -d '{{"prompt": "Once upon a time", "sampling": {{"max_tokens": 32}}}}'
{self._openai_hint()}
Ctrl-C stops everything.
"""


def command_name(name: str) -> str:
    """``name`` when the shell finds this venv's copy, else its full path (e.g. ``.venv/bin/genmesh``)."""
    here = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found and Path(found).resolve() == here.resolve():
        return name
    return str(here) if here.exists() else name


def run_mesh(options: LaunchOptions) -> int:
    """Start, print how to use it, wait for Ctrl-C / SIGTERM or a crashed child, stop. Exit code."""
    from servers.runtime.logging import configure_logging

    configure_logging(os.environ.get("GENMESH_LOG_LEVEL", "info"), os.environ.get("GENMESH_LOG_FORMAT", "auto"))

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # while starting: Mesh.start stops what it started

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupt)
    mesh = Mesh(options)
    started = time.monotonic()
    try:
        mesh.start()
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"genmesh up failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genmesh up interrupted while starting; everything it started is stopped", file=sys.stderr)
        return 130
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(mesh.banner(), flush=True)
    log.info("mesh_up", seconds=round(time.monotonic() - started, 2), url=mesh.url)
    while not stop.wait(1.0):  # children that die meanwhile are restarted by the supervisor
        pass
    mesh.stop()
    log.info("mesh_down")
    return 0
