"""Settings of the models server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genmesh.services import BY_NAME
from servers.models.engine import Folders
from servers.models.refs import AllowedHosts, Resolver
from servers.runtime.settings import ServerSettings, setting

PUBLIC_HUBS = "huggingface.co,hf.co,civitai.com"


@dataclasses.dataclass(frozen=True)
class ModelsSettings(ServerSettings):
    """genmesh models server: pulls model files into the Text, Image and Video servers' folders."""

    port: int = setting(BY_NAME["models"].port, "gRPC port", env="GENMESH_MODELS_PORT")
    # The same folders (and defaults) the Text, Image and Video servers read.
    text_models_dir: Path | None = setting(
        None, "where GGUF models land (default: <data_dir>/models/text)", env="GENMESH_TEXT_MODELS_DIR"
    )
    image_models_dir: Path | None = setting(
        None, "where SD1.5/SDXL checkpoints land (default: <data_dir>/models/image)", env="GENMESH_IMAGE_MODELS_DIR"
    )
    motion_adapters_dir: Path | None = setting(
        None, "where motion modules land (default: <data_dir>/models/motion)", env="GENMESH_MOTION_ADAPTERS_DIR"
    )
    pull_allowed_hosts: str = setting(
        PUBLIC_HUBS,
        "hosts pulls may fetch from, [http[s]://]host,... (https when no scheme; a host allows its subdomains); "
        "a redirect from one may also go to a public address",
    )
    pull_stall_seconds: float = setting(30.0, "a download that receives no byte for this long is retried")
    pull_retries: int = setting(5, "failed connections in a row (dropped, stalled, 5xx) before a pull gives up")
    pull_to_store: bool = setting(
        False,
        "also publish each pulled file to the object store's models bucket (clusters: each Text/Image/Video "
        "replica with --models-from-store fetches it from there on first use)",
    )
    parallel_pulls: int = setting(2, "pulls that run at once; more wait in the queue")
    civitai_url: str = setting("https://civitai.com", "base URL of civitai's API (civitai: references)")
    civitai_token: str = setting("", "civitai API token, for models that need a login", env="CIVITAI_TOKEN",
                                 secret=True)  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        AllowedHosts.parse(self.pull_allowed_hosts)  # a bad entry stops the start, naming the setting
        if self.pull_stall_seconds <= 0 or self.pull_retries < 0 or self.parallel_pulls < 1:
            raise ValueError("GENMESH_PULL_STALL_SECONDS > 0, GENMESH_PULL_RETRIES >= 0, GENMESH_PARALLEL_PULLS >= 1")

    def folders(self) -> Folders:
        return Folders(
            text=self.text_models_dir or self.default_models_dir("text"),
            image=self.image_models_dir or self.default_models_dir("image"),
            motion=self.motion_adapters_dir or self.default_models_dir("motion"),
            staging=self.default_models_dir(".staging"),
        )

    def resolver(self) -> Resolver:
        return Resolver(AllowedHosts.parse(self.pull_allowed_hosts), self.civitai_url, self.civitai_token)
