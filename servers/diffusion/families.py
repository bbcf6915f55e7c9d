"""The model families the diffusion services run (SD1.5 and SDXL): one small table of what differs.

Each entry names the diffusers pipeline classes per task (SDXL has no video tasks: its AnimateDiff
adapters are a separate beta line, not supported), the native resolution, the scheduler the
model ships with, how much free device memory ``auto`` wants before it keeps the weights resident,
and the linear latent -> RGB factors used for cheap previews (from ComfyUI's published
``latent_formats``: a least-squares fit of each family's VAE decoder on its scaled latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

GIB = 1024**3


class ModelFamily(StrEnum):
    SD15 = "sd15"
    SDXL = "sdxl"


class Task(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    INPAINT = "inpaint"  # a mask with the init image: a 9-channel inpainting UNet, or the latent blend
    TXT2VID = "txt2vid"
    IMG2VID = "img2vid"  # a still repeated over every frame, then re-noised (video-to-video)
    VID2VID = "vid2vid"

    @property
    def video(self) -> bool:
        return self in VIDEO_TASKS


VIDEO_TASKS = frozenset({Task.TXT2VID, Task.IMG2VID, Task.VID2VID})


@dataclass(frozen=True)
class FamilySpec:
    family: ModelFamily
    pipelines: dict[Task, str]  # diffusers class name per task it can run
    native_resolution: int  # pixels, square
    default_scheduler: str  # name in servers.diffusion.schedulers.SCHEDULERS
    full_mode_min_free_bytes: int  # `auto` keeps weights on the device when this much is free
    video_full_mode_min_free_bytes: int  # the same for AnimateDiff (weights + motion modules + frames)
    latent_rgb_factors: tuple[tuple[float, float, float], ...]  # one (R, G, B) row per latent channel
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)


FAMILIES: dict[ModelFamily, FamilySpec] = {
    ModelFamily.SD15: FamilySpec(
        family=ModelFamily.SD15,
        pipelines={
            Task.TXT2IMG: "StableDiffusionPipeline",
            Task.IMG2IMG: "StableDiffusionImg2ImgPipeline",
            Task.INPAINT: "StableDiffusionInpaintPipeline",
            # AnimateDiff: the same base model with a motion adapter (servers.diffusion.motion).
            Task.TXT2VID: "AnimateDiffPipeline",
            Task.IMG2VID: "AnimateDiffVideoToVideoPipeline",
            Task.VID2VID: "AnimateDiffVideoToVideoPipeline",
        },
        native_resolution=512,
        default_scheduler="pndm",
        # fp16 SD1.5 peaks at ~3.8 GiB for one 512x512 image; batches and 1024 px need more.
        full_mode_min_free_bytes=6 * GIB,
        # 16 frames at 512x512 peak at ~5.6 GiB with VAE slicing and 2-frame decoding (measured on
        # an H100): full on a 12 GiB card, lowvram (offload) below 8 GiB free.
        video_full_mode_min_free_bytes=8 * GIB,
        latent_rgb_factors=(
            (0.3512, 0.2297, 0.3227),
            (0.3250, 0.4974, 0.2350),
            (-0.2829, 0.1762, 0.2721),
            (-0.2120, -0.2616, -0.7177),
        ),
    ),
    ModelFamily.SDXL: FamilySpec(
        family=ModelFamily.SDXL,
        pipelines={
            Task.TXT2IMG: "StableDiffusionXLPipeline",
            Task.IMG2IMG: "StableDiffusionXLImg2ImgPipeline",
            Task.INPAINT: "StableDiffusionXLInpaintPipeline",
        },
        native_resolution=1024,
        default_scheduler="euler",
        # ~7 GiB of fp16 weights (UNet + two text encoders + VAE) plus 1024 px activations and an
        # fp32 VAE decode: lowvram below 16 GiB free, which is what lets SDXL run on 12 GiB cards.
        full_mode_min_free_bytes=16 * GIB,
        video_full_mode_min_free_bytes=16 * GIB,  # unused: no video tasks
        latent_rgb_factors=(
            (0.3651, 0.4232, 0.4341),
            (-0.2533, -0.0042, 0.1068),
            (0.1076, 0.1111, -0.0362),
            (-0.3165, -0.2492, -0.2188),
        ),
        latent_rgb_bias=(0.1084, -0.0175, -0.0011),
    ),
}


def family_spec(family: ModelFamily | str) -> FamilySpec:
    return FAMILIES[ModelFamily(family)]
