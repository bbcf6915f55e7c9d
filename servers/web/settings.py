"""Settings of the web front door (flags and GENMESH_WEB_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from servers.runtime.settings import UpstreamSettings, setting
from servers.web.status import parse_metrics_urls

UPSTREAMS = ("text", "image", "video")  # the services the OpenAI routes call (and /health follows)
LISTED = ("agent", "training", "models")  # called only to list their jobs (GET /v1/jobs) and for /v1/status


@dataclasses.dataclass(frozen=True)
class WebSettings(UpstreamSettings):
    """genmesh web front door: OpenAI-compatible HTTP routes over the Text, Image and Video servers."""

    service: ClassVar[str] = "web"  # GENMESH_WEB_TEXT_URL, ... (UpstreamSettings)
    host: str = setting("127.0.0.1", "address to listen on", env="GENMESH_WEB_HOST")
    port: int = setting(8088, "HTTP port", env="GENMESH_WEB_PORT")
    agent_url: str = setting("", "host:port of the Agent server (empty: GET /v1/jobs leaves its jobs out)",
                             env="GENMESH_WEB_AGENT_URL")  # fmt: skip
    training_url: str = setting("", "host:port of the Training server (empty: GET /v1/jobs leaves its jobs out)",
                                env="GENMESH_WEB_TRAINING_URL")  # fmt: skip
    models_url: str = setting("", "host:port of the models server (empty: GET /v1/jobs leaves its pulls out)",
                              env="GENMESH_WEB_MODELS_URL")  # fmt: skip
    media_url: str = setting("", "host:port to fetch stored files from, keeping the presigned URL's own Host "
                             "header (in containers: the object store, e.g. minio:9000; empty: the URL's address)",
                             env="GENMESH_WEB_MEDIA_URL")  # fmt: skip
    model_aliases: str = setting("", "extra model names for tools that filter them, alias=model,... "
                                 "(e.g. gpt-4o-mini=gemma-3-270m-q4_k_m)", env="GENMESH_WEB_MODEL_ALIASES")  # fmt: skip
    metrics_urls: str = setting("", "each server's Prometheus /metrics address, for GET /v1/status (queue depth, "
                                "memory): service=host:port,... once per replica (empty: health only)",
                                env="GENMESH_WEB_METRICS_URLS")  # fmt: skip
    health_poll_seconds: float = setting(5.0, "how often /health asks the services whether they answer",
                                         env="GENMESH_WEB_HEALTH_POLL_SECONDS")  # fmt: skip
    log_level: str = setting("info", "debug, info, warning or error", env="GENMESH_LOG_LEVEL")
    log_format: str = setting(
        "auto", "json, console, or auto (console on a terminal, else JSON)", env="GENMESH_LOG_FORMAT"
    )

    def __post_init__(self) -> None:
        self.aliases()  # a bad alias list stops the start naming the setting
        self.metrics_targets()
        host, _, port = self.media_url.strip().rpartition(":")
        if self.media_url.strip() and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"GENMESH_WEB_MEDIA_URL: expected host:port, got {self.media_url!r}")

    def upstream_urls(self, names: Sequence[str] = (*UPSTREAMS, *LISTED)) -> dict[str, str]:
        return super().upstream_urls(names)

    def metrics_targets(self) -> dict[str, list[str]]:
        """service -> its replicas' /metrics addresses (host:port)."""
        return parse_metrics_urls(self.metrics_urls)

    def aliases(self) -> dict[str, str]:
        """alias -> model name."""
        aliases: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.model_aliases.split(","))):
            alias, sep, model = (piece.strip() for piece in item.partition("="))
            if not (sep and alias and model):
                raise ValueError(f"GENMESH_WEB_MODEL_ALIASES: expected alias=model, got {item!r}")
            aliases[alias] = model
        return aliases
