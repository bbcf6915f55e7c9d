"""Typed settings parsed once from command-line flags and the environment.

Each settings class is a frozen dataclass; every field becomes a ``--flag-name`` and reads
``GENMESH_<FIELD>`` (or the env name in the field's metadata) when the flag is absent. Precedence:
flag > environment > default. The result is passed down; nothing reads the environment later.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from genmesh.local import DEFAULT_DATA_DIR
from servers.mesh.api_keys import KeySource
from servers.runtime.job_ids import JobIds
from servers.runtime.peers import Peers
from servers.runtime.tls import TlsFiles
from servers.runtime.webhooks.allow import AllowList
from servers.runtime.webhooks.gate import WebhookConfig
from storage.object_store import ObjectStore, StorageSettings
from storage.pulled import PulledModels

T = TypeVar("T")
METRICS_PORT_OFFSET = 1000  # a server's default metrics port: its gRPC port + this


def env_name(field: dataclasses.Field[Any], owner: type | None = None) -> str:
    """``GENMESH_<FIELD>``, the name the field declares, or for a service-scoped field (declared once
    for several servers) ``GENMESH_<SERVICE>_<FIELD>`` with ``owner.service``."""
    if field.metadata.get("scoped"):
        service = getattr(owner, "service", "")
        if not service:
            raise TypeError(f"{field.name}: a service-scoped setting needs the settings class's service")
        return f"GENMESH_{service.upper()}_{field.name.upper()}"
    return field.metadata.get("env") or f"GENMESH_{field.name.upper()}"


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(type, optional) for ``int``, ``int | None``, ``Path | None``..."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return args[0], True
    return annotation, False


def _convert(raw: str, kind: Any, name: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}: expected true/false, got {raw!r}")
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: cannot parse {raw!r} as {kind.__name__}") from exc


def parse_settings(
    cls: type[T], argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None, *, prog: str = ""
) -> T:
    """Build ``cls`` from flags (``argv``) and ``environ``; invalid values exit with a clear message."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(prog=prog or None, description=cls.__doc__)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    for field in fields:
        kind, _ = _base_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        helptext = f"{field.metadata.get('help', '')} [env {env_name(field, cls)}]"
        if kind is bool:
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=helptext
            )
        else:
            parser.add_argument(flag, dest=field.name, default=None, help=helptext)
    parsed = parser.parse_args(argv)
    values: dict[str, Any] = {}
    try:
        for field in fields:
            kind, optional = _base_type(hints[field.name])
            raw = getattr(parsed, field.name)
            env = env_name(field, cls)
            if raw is None and env in environ:
                raw = environ[env]
            if raw is None:
                continue
            if isinstance(raw, bool):
                values[field.name] = raw
            elif optional and raw == "":
                values[field.name] = None
            else:
                values[field.name] = _convert(raw, kind, env)
        return cls(**values)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def setting(default: Any, help: str, env: str | None = None, *, secret: bool = False, scoped: bool = False) -> Any:
    """A settings field: its default, its --help text, its environment name; secrets stay out of repr.
    ``scoped``: each server reads its own ``GENMESH_<SERVICE>_<FIELD>`` (see ``env_name``)."""
    metadata: dict[str, Any] = {"help": help}
    if env:
        metadata["env"] = env
    if scoped:
        metadata["scoped"] = True
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


@dataclasses.dataclass(frozen=True)
class UpstreamSettings:
    """The Text, Image and Video servers a server calls directly (host:port of each gRPC server),
    never through the gateway: the agent's stages and the web front door's routes. Each reads its
    own ``GENMESH_<SERVICE>_TEXT_URL`` (and so on)."""

    service: ClassVar[str] = ""
    text_url: str = setting(
        "", "host:port of the Text server (empty: what needs it answers UNAVAILABLE, 503 over HTTP)", scoped=True
    )
    image_url: str = setting(
        "", "host:port of the Image server (empty: what needs it answers UNAVAILABLE, 503 over HTTP)", scoped=True
    )
    video_url: str = setting(
        "", "host:port of the Video server (empty: what needs it answers UNAVAILABLE, 503 over HTTP)", scoped=True
    )

    def upstream_urls(self, names: Sequence[str] = ("text", "image", "video")) -> dict[str, str]:
        """The configured services by name (each ``<name>_url``); unconfigured ones are left out."""
        urls = {name: getattr(self, f"{name}_url").strip() for name in names}
        return {name: url for name, url in urls.items() if url}


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Settings every genmesh server shares."""

    service: ClassVar[str] = ""  # names the service-scoped settings' variables (GENMESH_<SERVICE>_...)

    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(50051, "gRPC port (0 picks a free one)")
    metrics_port: int = setting(
        -1,
        "HTTP port of the Prometheus /metrics endpoint on the same host (-1: the gRPC port + 1000; 0: a free one, "
        "logged as metrics_listening)",
    )
    max_queued: int = setting(16, "jobs that may wait in the queue; more get RESOURCE_EXHAUSTED")
    job_retention_seconds: float = setting(3600.0, "how long finished jobs stay readable by GetJob")
    drain_seconds: float = setting(30.0, "on SIGTERM, how long running jobs may take to finish")
    log_level: str = setting("info", "debug, info, warning or error")
    log_format: str = setting("auto", "json, console, or auto (console on a terminal, else JSON)")
    threads: int = setting(2, "CPU threads for the model runtime (llama.cpp / torch)")
    data_dir: Path = setting(
        DEFAULT_DATA_DIR, "where models and state live (models, generated keys, logs; genmesh up's S3 data)"
    )
    s3_endpoint: str = setting("127.0.0.1:8333", "S3 endpoint host:port", env="GENMESH_S3_ENDPOINT")
    s3_access_key: str = setting("", "S3 access key", env="GENMESH_S3_ACCESS_KEY")
    s3_secret_key: str = setting("", "S3 secret key", env="GENMESH_S3_SECRET_KEY", secret=True)
    s3_secure: bool = setting(False, "use HTTPS for S3", env="GENMESH_S3_SECURE")
    s3_region: str = setting("us-east-1", "S3 region", env="GENMESH_S3_REGION")
    s3_public_endpoint: str = setting(
        "", "host:port that callers use for presigned URLs (default: the S3 endpoint)", env="GENMESH_S3_PUBLIC_ENDPOINT"
    )
    # Mutual TLS between the gateway and the servers (a cluster; loopback stays plaintext).
    tls_dir: Path | None = setting(
        None,
        "folder with tls.crt, tls.key and ca.crt: serve gRPC over TLS and demand a client certificate from that "
        "CA (the agent also dials its services with them); empty: plaintext",
    )
    plaintext_health_port: int | None = setting(
        None,
        "a second port on the same host serving only grpc.health.v1 in plaintext, for probes that cannot present "
        "a certificate (the kubelet's); empty: none",
    )

    models_from_store: bool = setting(
        False,
        "Text, Image, Video: also list the models pulled into the object store's models bucket and fetch one into "
        "the models folder on first use (clusters, where the models server's disk is not this server's)",
    )

    # Replicas (servers/runtime/forwarding.py): job ids name their replica; calls about another
    # replica's job are forwarded there.
    replica: int = setting(
        -1,
        "this server's index among its service's replicas, 0..999 (-1: the ordinal that ends GENMESH_POD_NAME, "
        "as in a StatefulSet's text-1; else 0)",
    )
    pod_name: str = setting("", "the pod's name (Kubernetes downward API), read for the replica index")
    peers: str = setting(
        "",
        "every replica of this service in replica order, host:port,host:port,... or one template with {n} "
        "(text-{n}.text-peers:50051); empty: a single replica, nothing is forwarded",
    )

    # Completion webhooks (servers/runtime/webhooks).
    webhook_allow: str = setting(
        "",
        "completion webhooks: comma-separated URL patterns a notify_url must match (https://n8n.example.com/*; "
        "'*' a wildcard); a loopback, private or link-local address only through a pattern naming its host "
        "literally; empty: webhooks off",
        env="GENMESH_WEBHOOK_ALLOW",
    )
    webhook_backoff: float = setting(
        30.0,
        "seconds before a failed webhook is tried again; each retry waits twice as long (at most an hour), "
        "for up to 24 hours after the job ended",
        env="GENMESH_WEBHOOK_BACKOFF",
    )
    webhook_timeout: float = setting(10.0, "seconds one webhook attempt may take to connect and be answered")
    webhook_secret: str = setting(
        "", "signs the webhooks of jobs created without the gateway (no client id)", secret=True
    )
    api_keys_file: Path | None = setting(
        None,
        "the gateway's keys file, read for each key's webhook default (notify=) and secret (secret=, else derived "
        "from the key)",
        env="GENMESH_API_KEYS_FILE",
    )
    api_keys: str = setting(
        "", "the gateway's keys, as GENMESH_API_KEYS (read as the keys file)", env="GENMESH_API_KEYS", secret=True
    )

    def __post_init__(self) -> None:
        # A bad allowlist or backoff stops the start naming the setting.
        self.webhooks()
        for name, value in (
            ("GENMESH_WEBHOOK_BACKOFF", self.webhook_backoff),
            ("GENMESH_WEBHOOK_TIMEOUT", self.webhook_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name}: seconds > 0 (got {value})")
        # A bad replica index or peer list stops the start naming the setting.
        if self.replica < -1:
            raise ValueError(f"GENMESH_REPLICA: -1 (from the pod name) or 0..999 (got {self.replica})")
        replica = self.job_ids().replica
        count = self.peer_addresses().count()
        if count is not None and replica >= count:
            raise ValueError(f"GENMESH_REPLICA: {self.replica_index()} is not one of the {count} GENMESH_PEERS")
        # Read the TLS files now, so a missing or bad one stops the start with its name (an argparse error).
        if self.tls_dir is not None:
            TlsFiles.load(self.tls_dir)

    def webhooks(self) -> WebhookConfig:
        return WebhookConfig(
            allow=AllowList.parse(self.webhook_allow),
            first_backoff=self.webhook_backoff,
            timeout=self.webhook_timeout,
            keys=KeySource(self.api_keys or None, self.api_keys_file),
            operator_secret=self.webhook_secret,
        )

    def replica_index(self) -> int:
        if self.replica >= 0:
            return self.replica
        ordinal = re.search(r"-([0-9]+)$", self.pod_name)
        return int(ordinal[1]) if ordinal else 0

    def job_ids(self) -> JobIds:
        try:
            return JobIds(self.replica_index())
        except ValueError as exc:
            raise ValueError(f"GENMESH_REPLICA: {exc}") from None

    def peer_addresses(self) -> Peers:
        return Peers.parse(self.peers)

    def tls(self) -> TlsFiles | None:
        """The TLS material when ``tls_dir`` is set (checked when the settings were made)."""
        return TlsFiles.load(self.tls_dir) if self.tls_dir is not None else None

    def resolved_metrics_port(self) -> int:
        """-1 derives the port from the gRPC one, so servers sharing a host never collide by default."""
        if self.metrics_port >= 0:
            return self.metrics_port
        return self.port + METRICS_PORT_OFFSET if self.port else 0

    def default_models_dir(self, kind: str) -> Path:
        """``<data_dir>/models/<kind>``: the one rule for where the Text ("text"), Image ("image") and
        Video ("image", "motion") servers look for models and the models server puts pulled ones."""
        return self.data_dir / "models" / kind

    def pulled_models(self) -> PulledModels | None:
        """The pulled models in the object store, when ``models_from_store`` is set."""
        return PulledModels(ObjectStore(self.storage())) if self.models_from_store else None

    def storage(self) -> StorageSettings:
        names = ("endpoint", "access_key", "secret_key", "secure", "region", "public_endpoint")
        return StorageSettings(**{name: getattr(self, f"s3_{name}") for name in names})  # each from its s3_<name>
