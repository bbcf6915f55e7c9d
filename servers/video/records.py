"""Encodes a job's frames (video, poster, optional per-frame PNGs) and stores them in the ``outputs``
bucket under YYYYMMDD_HHmm/<job_id>/; generation parameters travel inside the files."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from servers.diffusion.schedulers import scheduler_label
from servers.media.images import a1111_parameters, encode_image
from servers.media.video import CONTENT_TYPES, EXTENSIONS, VideoFormat, encode_video
from servers.video.engine import VideoOutcome
from servers.video.types import VideoRequest
from storage.buckets import OUTPUTS
from storage.object_store import ObjectStore, StoredObject


@dataclass(frozen=True)
class EncodedVideo:
    video: bytes
    poster: bytes
    frames: list[bytes]  # PNGs, only when the request asked for them


@dataclass(frozen=True)
class SavedVideo:
    video: StoredObject
    video_data: bytes
    poster: StoredObject
    poster_data: bytes
    frames: list[tuple[StoredObject, bytes]]


def parameters_text(request: VideoRequest, outcome: VideoOutcome) -> str:
    """A1111-style parameters, plus the video's own (frames, fps, motion adapter, windows)."""
    output = outcome.output
    params = output.params
    extra: dict[str, object] = {
        "Frames": len(output.frames),
        "FPS": request.fps,
        "Motion adapter": outcome.motion_adapter.name,
    }
    if params.strength is not None:
        extra["Denoising strength"] = params.strength
    if output.context_length:
        extra["Context"] = f"{output.context_length}/{output.context_stride}"
    if params.prompt_schedule:
        extra["Prompt schedule"] = "; ".join(f"{frame}: {text}" for frame, text in params.prompt_schedule.items())
    return a1111_parameters(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        steps=params.steps,
        sampler=scheduler_label(params.scheduler or "ddim"),
        cfg_scale=params.guidance_scale,
        seed=params.seed,
        width=params.width or output.frames[0].width,
        height=params.height or output.frames[0].height,
        model=outcome.model.name,
        extra=extra,
    )


def encode(request: VideoRequest, outcome: VideoOutcome) -> EncodedVideo:
    frames = outcome.output.frames
    text = parameters_text(request, outcome)
    video = encode_video(frames, request.output_format, fps=request.fps, comment=text)
    poster = encode_image(frames[0], "png", parameters=text)
    pngs = [encode_image(frame, "png") for frame in frames] if request.save_frames else []
    return EncodedVideo(video, poster, pngs)


def save(store: ObjectStore, prefix: str, fmt: VideoFormat, encoded: EncodedVideo) -> SavedVideo:
    """Upload frames, poster and video (the video last: once it exists, everything does)."""
    frames = []
    for index, data in enumerate(encoded.frames):
        frames.append((store.put_bytes(OUTPUTS, f"{prefix}frames/{index:04d}.png", data, "image/png"), data))
    poster = store.put_bytes(OUTPUTS, f"{prefix}poster.png", encoded.poster, "image/png")
    video = store.put_bytes(OUTPUTS, f"{prefix}video.{EXTENSIONS[fmt]}", encoded.video, CONTENT_TYPES[fmt])
    return SavedVideo(video, encoded.video, poster, encoded.poster, frames)


def save_init_media(store: ObjectStore, prefix: str, image: Image.Image | None, video: bytes | None) -> StoredObject:
    """Keep an inline init image (as PNG) or video (as sent) next to the results, so a record can be re-run."""
    if image is not None:
        return store.put_bytes(OUTPUTS, f"{prefix}init.png", encode_image(image, "png"), "image/png")
    assert video is not None
    return store.put_bytes(OUTPUTS, f"{prefix}init_video", video, "application/octet-stream")
