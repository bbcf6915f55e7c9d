"""Settings of the Image server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genmesh.services import BY_NAME
from servers.diffusion.settings import DiffusionSettings
from servers.runtime.settings import setting


@dataclasses.dataclass(frozen=True)
class ImageSettings(DiffusionSettings):
    """genmesh Image server: Stable Diffusion 1.5 / SDXL txt2img and img2img with diffusers."""

    port: int = setting(BY_NAME["image"].port, "gRPC port", env="GENMESH_IMAGE_PORT")
    model: str = setting("", "default model name (empty: the first model in the models folder, else the "
                         "smoke-test tiny-sd15)",
                         env="GENMESH_IMAGE_MODEL")  # fmt: skip
    models_dir: Path | None = setting(None, "folder of diffusers folders and .safetensors/.ckpt files "
                                      "(default: <data_dir>/models/image)", env="GENMESH_IMAGE_MODELS_DIR")  # fmt: skip
    keep_alive_seconds: float = setting(600.0, "unload an idle model after this long (0: never)",
                                        env="GENMESH_IMAGE_KEEP_ALIVE_SECONDS")  # fmt: skip
    preload: bool = setting(True, "load the default model at start (health turns SERVING after)",
                            env="GENMESH_IMAGE_PRELOAD")  # fmt: skip
    max_pixels: int = setting(4 * 1024 * 1024, "most pixels one job may generate (width*height*num_images)",
                              env="GENMESH_IMAGE_MAX_PIXELS")  # fmt: skip
