"""What the Image and Video servers are configured by alike: devices, memory, LoRAs, compilation.
Each server's settings add their own port, models, defaults and budgets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from servers.runtime.settings import ServerSettings, setting


@dataclasses.dataclass(frozen=True)
class DiffusionSettings(ServerSettings):
    # Each server reads these as GENMESH_<SERVICE>_<FIELD>; one declares a field again where its help
    # or default differs.
    model: str = setting("", "default model name (empty: the first model in the models folder, else the "
                         "smoke-test tiny-sd15)", scoped=True)  # fmt: skip
    models_dir: Path | None = setting(None, "folder of diffusers folders and .safetensors/.ckpt files "
                                      "(default: <data_dir>/models/image)", scoped=True)  # fmt: skip
    keep_alive_seconds: float = setting(600.0, "unload an idle model after this long (0: never)", scoped=True)
    preload: bool = setting(True, "load the default model at start (health turns SERVING after)", scoped=True)
    max_pixels: int = setting(4 * 1024 * 1024, "most pixels one job may generate (width*height*num_images)",
                              scoped=True)  # fmt: skip
    loras_dir: Path | None = setting(None, "folder of LoRA .safetensors files, kohya or diffusers layout "
                                     "(default: <data_dir>/models/lora)", env="GENMESH_LORAS_DIR")  # fmt: skip
    lora_budget_mb: int = setting(1024, "LoRA files kept loaded per model beyond the ones a job uses, in MB; "
                                  "the least recently used unload first", env="GENMESH_LORA_BUDGET_MB")  # fmt: skip
    device: str = setting("auto", "auto, cpu, cuda, cuda:N (cuda also means ROCm)", env="GENMESH_DEVICE")
    memory_mode: str = setting("auto", "auto (full when the family's free memory is there: 6 GiB SD1.5, 16 GiB "
                               "SDXL, 8 GiB AnimateDiff), full or lowvram (attention/VAE slicing, CPU offload; "
                               "Video also splits inference)", env="GENMESH_MEMORY_MODE")  # fmt: skip
    compile: bool = setting(False, "torch.compile the (motion) UNet and VAE decoder at load and warm them up before "
                            "SERVING (slow first start, faster steps; compiled kernels are cached on disk)",
                            env="GENMESH_COMPILE")  # fmt: skip
    compile_mode: str = setting("default", "torch.compile mode: default or max-autotune-no-cudagraphs",
                                env="GENMESH_COMPILE_MODE")  # fmt: skip
    compile_warmup: str = setting("", "shapes compiled before SERVING, WxH[xN] (N images, or frames: default 16) "
                                  "comma-separated; empty: the default size, then a second size and count "
                                  "(one graph for every other size)", env="GENMESH_COMPILE_WARMUP")  # fmt: skip
    compile_cache_dir: Path | None = setting(None, "inductor's on-disk cache of compiled kernels "
                                             "(default: <data_dir>/cache/inductor)",
                                             env="TORCHINDUCTOR_CACHE_DIR")  # fmt: skip

    def resolved_models_dir(self) -> Path:
        """Base models: Image's folder, which Video shares by default."""
        return self.models_dir or self.default_models_dir("image")

    def resolved_loras_dir(self) -> Path:
        return self.loras_dir or self.data_dir / "models" / "lora"

    def cache_dir(self) -> Path:
        return self.data_dir / "cache" / "diffusion"

    def resolved_compile_cache_dir(self) -> Path:
        return self.compile_cache_dir or self.data_dir / "cache" / "inductor"
