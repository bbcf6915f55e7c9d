"""Settings of the Video server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from genmesh.services import BY_NAME
from servers.diffusion.settings import DiffusionSettings
from servers.runtime.settings import setting


@dataclasses.dataclass(frozen=True)
class VideoSettings(DiffusionSettings):
    """genmesh Video server: AnimateDiff text/image/video-to-video on SD1.5 models with diffusers."""

    service: ClassVar[str] = "video"  # GENMESH_VIDEO_MODEL, _MODELS_DIR, ... (DiffusionSettings)
    port: int = setting(BY_NAME["video"].port, "gRPC port", scoped=True)
    model: str = setting("", "default base model (empty: the first in the models folder, else the "
                         "smoke-test tiny-sd15)", scoped=True)  # fmt: skip
    motion_adapter: str = setting("", "default motion adapter (empty: the first in its folder, else the smoke-test "
                                  "tiny-motion-adapter)", scoped=True)  # fmt: skip
    models_dir: Path | None = setting(None, "folder of SD1.5 diffusers folders and .safetensors/.ckpt files "
                                      "(default: <data_dir>/models/image, shared with the Image server)",
                                      scoped=True)  # fmt: skip
    motion_adapters_dir: Path | None = setting(None, "folder of motion adapters: AnimateDiff .ckpt/.safetensors "
                                               "files or MotionAdapter folders (default: <data_dir>/models/motion)",
                                               scoped=True)  # fmt: skip
    preload: bool = setting(True, "load the default model and adapter at start (health turns SERVING after)",
                            scoped=True)  # fmt: skip
    decode_chunk_size: int = setting(2, "frames the VAE decodes at a time (memory vs speed)",
                                     scoped=True)  # fmt: skip
    max_pixels: int = setting(64 * 512 * 512, "most pixels one job may generate (width*height*num_frames; 64 "
                              "frames at 512x512)", scoped=True)  # fmt: skip

    def resolved_motion_adapters_dir(self) -> Path:
        return self.motion_adapters_dir or self.default_models_dir("motion")
