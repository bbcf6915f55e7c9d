"""What a validated Image or Video request shares (plain Python): the prompt, the sampling
parameters, one init image, delivery and keep-alive. Each service's request adds its own fields."""

from __future__ import annotations

from dataclasses import dataclass

from servers.diffusion.lora import LoraRequest
from storage.object_store import ObjectLocation


@dataclass(frozen=True)
class DiffusionRequest:
    """``None`` means "use the model's or server's default" (filled at admission, ``prepare``)."""

    prompt: str
    model: str = ""
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    scheduler: str | None = None
    init_image_data: bytes | None = None
    init_image_ref: ObjectLocation | None = None
    strength: float | None = None
    return_inline: bool = False
    preview_interval_steps: int = 0
    keep_alive_seconds: int | None = None  # how long the model stays loaded after the job (None: server's)
    loras: tuple[LoraRequest, ...] = ()  # from `loras` and the prompt's <lora:...> (taken out of `prompt`)
    defaults_note: str = ""  # set at admission when light defaults (smoke-test model, CPU) filled a field
