"""Settings of the Agent server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses

from genmesh.services import BY_NAME
from servers.runtime.settings import ServerSettings, setting


@dataclasses.dataclass(frozen=True)
class AgentSettings(ServerSettings):
    """genmesh Agent server: chains the Text, Image and Video servers (as their gRPC client) into one job."""

    port: int = setting(BY_NAME["agent"].port, "gRPC port", env="GENMESH_AGENT_PORT")
    # The services are called directly (host:port of each gRPC server), never through the gateway.
    text_url: str = setting("", "host:port of the Text server (empty: stages needing it are UNAVAILABLE)",
                            env="GENMESH_AGENT_TEXT_URL")  # fmt: skip
    image_url: str = setting("", "host:port of the Image server (empty: stages needing it are UNAVAILABLE)",
                             env="GENMESH_AGENT_IMAGE_URL")  # fmt: skip
    video_url: str = setting("", "host:port of the Video server (empty: stages needing it are UNAVAILABLE)",
                             env="GENMESH_AGENT_VIDEO_URL")  # fmt: skip
    workers: int = setting(2, "character jobs that run at once (each waits on its services' own queues)",
                           env="GENMESH_AGENT_WORKERS")  # fmt: skip
    health_poll_seconds: float = setting(5.0, "how often the AgentService health status asks the services "
                                         "whether they answer", env="GENMESH_AGENT_HEALTH_POLL_SECONDS")  # fmt: skip
    keep_alive_seconds: int | None = setting(None, "keep_alive_seconds sent with every sub-job (0: each service "
                                             "unloads its model when its stage ends, so services sharing one GPU "
                                             "take turns; empty: the services' own setting)",
                                             env="GENMESH_AGENT_KEEP_ALIVE_SECONDS")  # fmt: skip

    def upstream_urls(self) -> dict[str, str]:
        """The configured services by name ("text", "image", "video"); unconfigured ones are left out."""
        urls = {"text": self.text_url, "image": self.image_url, "video": self.video_url}
        return {name: url.strip() for name, url in urls.items() if url.strip()}
