"""Step progress, cancellation and cheap previews through diffusers' ``callback_on_step_end``.

:class:`StepCallback` is passed as ``callback_on_step_end=``. After every denoising step it reports
``(step, total)`` to the job, and every ``preview_every`` steps it adds a small WebP preview made
from the latents with a fixed linear map (4 latent channels -> RGB; no VAE, well under a
millisecond). When the job was cancelled, ``check_cancelled()`` raises ``genmesh.errors.Cancelled``
out of the callback: the pipeline stops at once, nothing is decoded, the pipeline stays usable.
(``pipe._interrupt`` is not used: it stops early but still decodes and returns a half-denoised
image.) It returns the callback kwargs unchanged, as diffusers requires.

The job side is a small protocol; ``servers.runtime.queue.JobContext`` fits it, and previews are
plain dataclasses with the fields of ``servers.runtime.events.Preview``.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

import torch

from servers.diffusion.families import ModelFamily, family_spec
from servers.runtime.events import Preview, Reporter, StageChanged

if TYPE_CHECKING:
    from PIL import Image

PREVIEW_MAX_SIDE = 256


def latents_to_rgb(latents: torch.Tensor, family: ModelFamily | str) -> torch.Tensor:
    """Approximate RGB in [0, 1], shape (H, W, 3), of the first image of a batch of latents
    ((B, 4, h, w), or (B, 4, frames, h, w) for video: the middle frame)."""
    spec = family_spec(family)
    sample = latents[0].detach().float().cpu()
    if sample.ndim == 4:  # (channels, frames, h, w)
        sample = sample[:, sample.shape[1] // 2]
    factors = torch.tensor(spec.latent_rgb_factors, dtype=torch.float32)  # (4, 3)
    bias = torch.tensor(spec.latent_rgb_bias, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", sample, factors) + bias
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def rgb_to_image(rgb: torch.Tensor) -> Image.Image:
    from PIL import Image

    array = (rgb * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(array, mode="RGB")


def latent_preview(
    latents: torch.Tensor, family: ModelFamily | str, *, max_side: int = PREVIEW_MAX_SIDE, quality: int = 60
) -> Preview:
    """A small WebP preview of the first image in ``latents`` (at latent resolution, one pixel per
    8x8 block of the output, shrunk further to at most ``max_side`` on the long side)."""
    image = rgb_to_image(latents_to_rgb(latents, family))
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality, method=0)
    return Preview(buffer.getvalue(), "image/webp", image.width, image.height)


class StepCallback:
    """``callback_on_step_end`` for diffusers pipelines: progress, cancel, previews."""

    def __init__(
        self,
        reporter: Reporter,
        family: ModelFamily | str,
        *,
        preview_every: int = 0,
        total_steps: int | None = None,
        announce_decoding: bool = False,
    ) -> None:
        self.reporter = reporter
        # Pipelines that decode inside their call (txt2img, img2img): say so after the last step.
        self.announce_decoding = announce_decoding
        self.family = ModelFamily(family)
        self.preview_every = preview_every
        self.total_steps = total_steps
        self.steps_done = 0
        self.previews_sent = 0
        self.last_step_at: float | None = None

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        self.steps_done = step_index + 1
        self.last_step_at = time.monotonic()
        # The pipeline knows how many steps it really runs (img2img: about steps * strength).
        total = getattr(pipe, "num_timesteps", None) or self.total_steps or self.steps_done
        self.reporter.check_cancelled()
        preview = None
        latents = callback_kwargs.get("latents")
        if self.preview_every > 0 and latents is not None and self.steps_done % self.preview_every == 0:
            preview = latent_preview(latents, self.family)
            self.previews_sent += 1
        self.reporter.progress(self.steps_done, total, preview)
        if self.announce_decoding and self.steps_done == total:
            self.reporter.output(StageChanged("decoding"), total, total)
        return callback_kwargs
