"""Settings of the Image server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from genmesh.services import BY_NAME
from servers.diffusion.settings import DiffusionSettings
from servers.runtime.settings import setting


@dataclasses.dataclass(frozen=True)
class ImageSettings(DiffusionSettings):
    """genmesh Image server: Stable Diffusion 1.5 / SDXL txt2img and img2img with diffusers."""

    service: ClassVar[str] = "image"  # GENMESH_IMAGE_MODEL, _MODELS_DIR, ... (DiffusionSettings)
    port: int = setting(BY_NAME["image"].port, "gRPC port", scoped=True)
