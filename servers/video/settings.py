"""Settings of the Video server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genmesh.services import BY_NAME
from servers.runtime.settings import ServerSettings, setting


@dataclasses.dataclass(frozen=True)
class VideoSettings(ServerSettings):
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
    loras_dir: Path | None = setting(None, "folder of LoRA .safetensors files, kohya or diffusers layout "
                                     "(default: <data_dir>/models/lora)", env="GENMESH_LORAS_DIR")  # fmt: skip
    lora_budget_mb: int = setting(1024, "LoRA files kept loaded per model beyond the ones a job uses, in MB; "
                                  "the least recently used unload first", env="GENMESH_LORA_BUDGET_MB")  # fmt: skip
    device: str = setting("auto", "auto, cpu, cuda, cuda:N (cuda also means ROCm)", env="GENMESH_DEVICE")
    memory_mode: str = setting("auto", "auto (8 GiB free keeps the weights on the GPU), full or lowvram (CPU "
                               "offload, attention slicing, split inference)",
                               env="GENMESH_MEMORY_MODE")  # fmt: skip
    keep_alive_seconds: float = setting(600.0, "unload an idle model after this long (0: never)",
                                        env="GENMESH_VIDEO_KEEP_ALIVE_SECONDS")  # fmt: skip
    preload: bool = setting(True, "load the default model and adapter at start (health turns SERVING after)",
                            env="GENMESH_VIDEO_PRELOAD")  # fmt: skip
    decode_chunk_size: int = setting(2, "frames the VAE decodes at a time (memory vs speed)",
                                     env="GENMESH_VIDEO_DECODE_CHUNK_SIZE")  # fmt: skip
    max_pixels: int = setting(64 * 512 * 512, "most pixels one job may generate (width*height*num_frames; 64 "
                              "frames at 512x512)",
                              env="GENMESH_VIDEO_MAX_PIXELS")  # fmt: skip
    compile: bool = setting(False, "torch.compile the motion UNet and VAE decoder at load and warm them up before "
                            "SERVING (slow first start, faster steps; compiled kernels are cached on disk)",
                            env="GENMESH_COMPILE")  # fmt: skip
    compile_mode: str = setting("default", "torch.compile mode: default or max-autotune-no-cudagraphs",
                                env="GENMESH_COMPILE_MODE")  # fmt: skip
    compile_warmup: str = setting("", "shapes compiled before SERVING, WxH[xN] (N frames, default 16) comma-separated; "
                                  "empty: the default size, then a second size and frame count (one graph "
                                  "for every other size)", env="GENMESH_COMPILE_WARMUP")  # fmt: skip
    compile_cache_dir: Path | None = setting(None, "inductor's on-disk cache of compiled kernels "
                                             "(default: <data_dir>/cache/inductor)",
                                             env="TORCHINDUCTOR_CACHE_DIR")  # fmt: skip

    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.default_models_dir("image")

    def resolved_motion_adapters_dir(self) -> Path:
        return self.motion_adapters_dir or self.default_models_dir("motion")

    def resolved_loras_dir(self) -> Path:
        return self.loras_dir or self.data_dir / "models" / "lora"

    def cache_dir(self) -> Path:
        return self.data_dir / "cache" / "diffusion"

    def resolved_compile_cache_dir(self) -> Path:
        return self.compile_cache_dir or self.data_dir / "cache" / "inductor"
