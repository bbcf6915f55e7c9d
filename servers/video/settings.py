"""Settings of the Video server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genmesh.services import BY_NAME
from servers.diffusion.settings import DiffusionSettings
from servers.runtime.settings import setting


@dataclasses.dataclass(frozen=True)
class VideoSettings(DiffusionSettings):
    """genmesh Video server: AnimateDiff text/image/video-to-video on SD1.5 models with diffusers."""

    port: int = setting(BY_NAME["video"].port, "gRPC port", env="GENMESH_VIDEO_PORT")
    model: str = setting("", "default base model (empty: the first in the models folder, else the "
                         "smoke-test tiny-sd15)",
                         env="GENMESH_VIDEO_MODEL")  # fmt: skip
    motion_adapter: str = setting("", "default motion adapter (empty: the first in its folder, else the smoke-test "
                                  "tiny-motion-adapter)", env="GENMESH_VIDEO_MOTION_ADAPTER")  # fmt: skip
    models_dir: Path | None = setting(None, "folder of SD1.5 diffusers folders and .safetensors/.ckpt files "
                                      "(default: <data_dir>/models/image, shared with the Image server)",
                                      env="GENMESH_VIDEO_MODELS_DIR")  # fmt: skip
    motion_adapters_dir: Path | None = setting(None, "folder of motion adapters: AnimateDiff .ckpt/.safetensors "
                                               "files or MotionAdapter folders (default: <data_dir>/models/motion)",
                                               env="GENMESH_VIDEO_MOTION_ADAPTERS_DIR")  # fmt: skip
    keep_alive_seconds: float = setting(600.0, "unload an idle model after this long (0: never)",
                                        env="GENMESH_VIDEO_KEEP_ALIVE_SECONDS")  # fmt: skip
    preload: bool = setting(True, "load the default model and adapter at start (health turns SERVING after)",
                            env="GENMESH_VIDEO_PRELOAD")  # fmt: skip
    decode_chunk_size: int = setting(2, "frames the VAE decodes at a time (memory vs speed)",
                                     env="GENMESH_VIDEO_DECODE_CHUNK_SIZE")  # fmt: skip
    max_pixels: int = setting(64 * 512 * 512, "most pixels one job may generate (width*height*num_frames; 64 "
                              "frames at 512x512)",
                              env="GENMESH_VIDEO_MAX_PIXELS")  # fmt: skip

    def resolved_motion_adapters_dir(self) -> Path:
        return self.motion_adapters_dir or self.default_models_dir("motion")
