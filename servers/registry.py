"""How each declared service's server is built: its settings class and its service class.

The declaration (``genmesh.services``) names the services; their classes follow from the name by
convention: ``servers.<name>.settings:<Name>Settings`` and ``servers.<name>.service:<Name>Service``
(``servers.text.settings:TextSettings``). ``OVERRIDES`` names the classes of a service whose names
break that convention (none today). Classes are ``module:Class`` strings, so importing the registry
never imports torch or llama.cpp; ``python -m servers <name>`` runs any of them.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

from genmesh.services import SERVICES, ServiceInfo

# name -> (settings, service) as "module:Class", only where the convention does not hold.
OVERRIDES: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class ServerSpec:
    info: ServiceInfo
    settings: str  # "servers.text.settings:TextSettings"
    service: str  # "servers.text.service:TextService": built from the settings, run by the bootstrap

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def offline(self) -> bool:
        """Never reaches a model hub (only the models server pulls from one)."""
        return self.info.offline


def conventional(name: str) -> tuple[str, str]:
    """``("servers.text.settings:TextSettings", "servers.text.service:TextService")`` for ``text``."""
    title = name.title().replace("_", "")
    return f"servers.{name}.settings:{title}Settings", f"servers.{name}.service:{title}Service"


def spec_for(info: ServiceInfo) -> ServerSpec:
    settings, service = OVERRIDES.get(info.name) or conventional(info.name)
    return ServerSpec(info, settings, service)


SERVERS: dict[str, ServerSpec] = {info.name: spec_for(info) for info in SERVICES}


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
