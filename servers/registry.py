"""How each service's server is built: its settings class and its service class, by name.

With ``genmesh.services`` (names, protos, job prefixes, ports) this is the whole declaration of a
service: ``python -m servers <name>`` runs any of them, ``genmesh up`` starts them, the gateway
config gets a route and a cluster for each. Classes are named as ``module:Class`` strings so that
importing the registry never imports torch or llama.cpp.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

from genmesh.services import BY_NAME, ServiceInfo


@dataclass(frozen=True)
class ServerSpec:
    info: ServiceInfo
    settings: str  # "servers.text.settings:TextSettings"
    service: str  # "servers.text.service:TextService": built from the settings, run by the bootstrap
    offline: bool = True  # never reaches a model hub (only the models server pulls from one)

    @property
    def name(self) -> str:
        return self.info.name


def _spec(name: str, settings: str, service: str, *, offline: bool = True) -> ServerSpec:
    return ServerSpec(
        BY_NAME[name], f"servers.{name}.settings:{settings}", f"servers.{name}.service:{service}", offline
    )


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        _spec("text", "TextSettings", "TextService"),
        _spec("image", "ImageSettings", "ImageService"),
        _spec("video", "VideoSettings", "VideoService"),
        _spec("training", "TrainingSettings", "TrainingService"),
        _spec("agent", "AgentSettings", "AgentService"),
        _spec("models", "ModelsSettings", "ModelsService", offline=False),
    )
}


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def main(name: str, argv: list[str] | None = None) -> None:
    """Parse the server's settings (flags and GENMESH_* environment), configure logging, then
    import the heavy parts (torch, diffusers, llama.cpp) and serve until SIGTERM."""
    from servers.runtime.logging import configure_logging
    from servers.runtime.settings import parse_settings

    if name not in SERVERS:
        raise SystemExit(f"unknown service {name!r}; choose from {', '.join(SERVERS)}")
    spec = SERVERS[name]
    # No model hub is ever reached by a loader: every load is local (a second guard beside
    # local_files_only). The models server pulls, so it asks the hub (HF_ENDPOINT) on purpose.
    if spec.offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = parse_settings(
        _load(spec.settings), argv if argv is not None else sys.argv[1:], prog=f"python -m servers {name}"
    )
    configure_logging(settings.log_level, settings.log_format, service=name)
    from servers.runtime.server import run_service

    run_service(_load(spec.service)(settings), settings)
