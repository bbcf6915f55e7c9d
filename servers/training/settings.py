"""Settings of the Training server (flags and GENMESH_* environment, parsed once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from genmesh.services import BY_NAME
from servers.runtime.settings import ServerSettings, setting


@dataclasses.dataclass(frozen=True)
class TrainingSettings(ServerSettings):
    """genmesh Training server: synthetic data, Restormer training, reports, registry, restore."""

    port: int = setting(BY_NAME["training"].port, "gRPC port", env="GENMESH_TRAINING_PORT")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N (cuda also means ROCm)", env="GENMESH_DEVICE")
    max_queued_trainings: int = setting(8, "training jobs that may wait; more get RESOURCE_EXHAUSTED",
                                        env="GENMESH_TRAINING_MAX_QUEUED")  # fmt: skip
    amp: bool = setting(True, "mixed precision on GPU (bf16/fp16 autocast)", env="GENMESH_TRAINING_AMP")
    compile: bool = setting(False, "torch.compile the training step (slow first step, faster training; compiled "
                            "kernels are cached on disk)", env="GENMESH_COMPILE")  # fmt: skip
    compile_mode: str = setting("default", "torch.compile mode: default or max-autotune-no-cudagraphs",
                                env="GENMESH_COMPILE_MODE")  # fmt: skip
    channels_last: bool = setting(False, "train in channels-last memory format (faster convolutions on most GPUs)",
                                  env="GENMESH_TRAINING_CHANNELS_LAST")  # fmt: skip
    compile_cache_dir: Path | None = setting(None, "inductor's on-disk cache of compiled kernels "
                                             "(default: <data_dir>/cache/inductor)",
                                             env="TORCHINDUCTOR_CACHE_DIR")  # fmt: skip
    resume_on_start: bool = setting(True, "continue interrupted training jobs from their checkpoints at start",
                                    env="GENMESH_TRAINING_RESUME")  # fmt: skip

    def resolved_compile_cache_dir(self) -> Path:
        return self.compile_cache_dir or self.data_dir / "cache" / "inductor"
