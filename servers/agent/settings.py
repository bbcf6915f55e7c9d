"""Settings of the Agent server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from genmesh.services import BY_NAME
from servers.runtime.settings import ServerSettings, UpstreamSettings, setting


@dataclasses.dataclass(frozen=True)
class AgentSettings(ServerSettings, UpstreamSettings):
    """genmesh Agent server: chains the Text, Image and Video servers (as their gRPC client) into one job."""

    service: ClassVar[str] = "agent"  # GENMESH_AGENT_TEXT_URL, ... (UpstreamSettings)
    port: int = setting(BY_NAME["agent"].port, "gRPC port", env="GENMESH_AGENT_PORT")
    workers: int = setting(2, "character jobs that run at once (each waits on its services' own queues)",
                           env="GENMESH_AGENT_WORKERS")  # fmt: skip
    health_poll_seconds: float = setting(5.0, "how often the AgentService health status asks the services "
                                         "whether they answer", env="GENMESH_AGENT_HEALTH_POLL_SECONDS")  # fmt: skip
    keep_alive_seconds: int | None = setting(None, "keep_alive_seconds sent with every sub-job (0: each service "
                                             "unloads its model when its stage ends, so services sharing one GPU "
                                             "take turns; empty: the services' own setting)",
                                             env="GENMESH_AGENT_KEEP_ALIVE_SECONDS")  # fmt: skip
