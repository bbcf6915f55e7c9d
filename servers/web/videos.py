"""``/v1/videos``: OpenAI's asynchronous video API on genmesh's video jobs. Create starts a detached
GenerateVideo job and answers with its id at once; retrieve, content and delete are GetJob and
CancelJob on that id. Nothing is kept here: the job is the video."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from genmesh.common.v1 import job_pb2
from genmesh.video.v1 import video_pb2
from servers.diffusion.params import VIDEO, Limit
from servers.web.errors import invalid
from servers.web.fields import Body, Form, Param, assign, assign_size_and_extras

# Frames are seconds x fps. The video service's own default rate (8 fps) is sent explicitly when the
# caller names no fps, so that the frame count is known here; the service checks both ranges.
DEFAULT_FPS = 8
VARIANTS = ("video", "thumbnail")
OUTPUT_FORMATS = {
    "mp4": video_pb2.VIDEO_FORMAT_MP4,
    "gif": video_pb2.VIDEO_FORMAT_GIF,
    "webp": video_pb2.VIDEO_FORMAT_WEBP,
}
# genmesh's own fields, by their genmesh names.
EXTRAS = (
    Param("seed", "integer", "genmesh's own: the seed.", VIDEO["seed"]),
    Param("negative_prompt", "string", "genmesh's own: what not to draw.", VIDEO["negative_prompt"]),
    Param("steps", "integer", "genmesh's own: denoising steps.", VIDEO["steps"]),
    Param("guidance_scale", "number", "genmesh's own: classifier-free guidance.", VIDEO["guidance_scale"]),
    Param("strength", "number", "genmesh's own: how far from input_reference to go.", VIDEO["strength"]),
    Param("motion_adapter", "string", "genmesh's own: the motion adapter to animate with."),
)  # fmt: skip
CREATE_FIELDS = (
    Param("prompt", "string", "What to animate.", VIDEO["prompt"], required=True),
    Param("model", "string", "A video model's name or alias (GET /v1/models); the service's default when absent."),
    Param("seconds", "string|number", f"Length in seconds (\"4\" or 4): seconds x fps frames, "
          f"{VIDEO['num_frames'].describe()}.", schema={"anyOf": [{"type": "string"}, {"type": "number"}]}),
    Param("size", "string", f"WIDTHxHEIGHT in pixels (each {VIDEO['width'].describe()}) or auto.",
          schema={"pattern": "^(auto|[0-9]+x[0-9]+)$"}),
    Param("fps", "integer", f"Frames per second (default {DEFAULT_FPS}).", VIDEO["fps"]),
    Param("output_format", "string", "The video's file format (default mp4).", choices=tuple(OUTPUT_FORMATS)),
    Param("input_reference", "string", "An image (image-to-video) or video (video-to-video) to start from: "
          "a file part of a multipart/form-data request.", file=True),
    *EXTRAS,
)  # fmt: skip
LIST_DEFAULT, LIST_MAX = 20, 100  # GET /v1/videos?limit=: OpenAI's default and most
LIST_PARAMS = (
    Param("limit", "integer", f"Videos per page (default {LIST_DEFAULT}).", Limit(1, LIST_MAX)),
    Param("order", "string", "Newest first only.", choices=("desc",)),
    Param("after", "string", "The last id of the previous page."),
)
CONTENT_PARAMS = (Param("variant", "string", "The video, or its first frame as an image.", choices=VARIANTS),)
PARAMS = {"num_frames": "seconds", "width": "size", "height": "size", "init_image_data": "input_reference",
          "init_video_data": "input_reference"}  # fmt: skip
STATUSES = {
    job_pb2.JOB_STATE_QUEUED: "queued",
    job_pb2.JOB_STATE_RUNNING: "in_progress",
    job_pb2.JOB_STATE_SUCCEEDED: "completed",
    job_pb2.JOB_STATE_FAILED: "failed",
    job_pb2.JOB_STATE_CANCELLED: "failed",  # OpenAI's videos have no cancelled state: failed, code "cancelled"
}


VIDEO_OBJECT = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "progress", "seconds", "size", "error"],
    "properties": {
        "id": {"type": "string"}, "object": {"const": "video"}, "created_at": {"type": "integer"},
        "status": {"enum": sorted(set(STATUSES.values()))}, "model": {"type": "string"},
        "prompt": {"type": ["string", "null"]}, "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "seconds": {"type": "string"}, "size": {"type": "string"},
        "completed_at": {"type": ["integer", "null"]},
        "error": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["code", "message"]}]},
    },
}  # fmt: skip
VIDEO_LIST = {
    "type": "object",
    "required": ["object", "data", "has_more"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": VIDEO_OBJECT},
                   "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]},
                   "has_more": {"type": "boolean"}},
}  # fmt: skip
VIDEO_DELETED = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {"id": {"type": "string"}, "object": {"const": "video.deleted"}, "deleted": {"type": "boolean"}},
}


@dataclass
class VideoCall:
    request: video_pb2.GenerateVideoRequest
    seconds: str
    size: str
    params: dict[str, str] = field(default_factory=lambda: dict(PARAMS))


def create_call(fields: Body | Form, reference: tuple[bytes, str] | None) -> VideoCall:
    """``reference``: an uploaded input (bytes, content type) for image- or video-to-video."""
    request = video_pb2.GenerateVideoRequest(
        prompt=fields.get("prompt", "string", ""), model=fields.get("model", "string", ""), detach=True
    )
    fps = fields.get("fps", "integer", DEFAULT_FPS)
    assign(request, "fps", fps, "fps", VIDEO)
    # OpenAI sends seconds as a string ("4"); a number is accepted too.
    raw = fields.data.get("seconds") if isinstance(fields, Body) else fields.fields.get("seconds")
    seconds = None
    if raw is not None and raw != "":
        try:
            seconds = float(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            seconds = None
        frames = seconds * fps if seconds is not None else math.nan
        if not (math.isfinite(frames) and frames > 0):  # also NaN, "inf", or so many frames a float overflows
            raise invalid("seconds", f'seconds: expected a positive number of seconds such as "4" (got {raw!r})')
        assign(request, "num_frames", round(frames), "seconds", VIDEO)
    width, height = assign_size_and_extras(request, fields, EXTRAS, VIDEO)
    output_format = fields.get("output_format", "string", "mp4")
    if output_format not in OUTPUT_FORMATS:
        raise invalid("output_format", f"output_format: mp4, gif or webp (got {output_format!r})")
    request.output_format = OUTPUT_FORMATS[output_format]
    if reference is not None:
        data, content_type = reference
        if content_type.startswith("video/") or content_type == "image/gif":
            request.init_video_data = data
        else:
            request.init_image_data = data
    shown_seconds = f"{seconds:g}" if seconds is not None else ""
    return VideoCall(request, shown_seconds, f"{width}x{height}" if width is not None else "")


def _seconds(timestamp: Any) -> int | None:
    return timestamp.seconds if timestamp.seconds else None


def video_object(job: video_pb2.Job, *, model: str = "", seconds: str = "", size: str = "", prompt: str = "") -> dict:
    """OpenAI's video object from a genmesh video job (``GetJob``'s answer)."""
    status = job.status
    state = STATUSES.get(status.state, "queued")
    error = None
    if status.state == job_pb2.JOB_STATE_FAILED:
        error = {"code": status.error.code.lower(), "message": status.error.message}
    elif status.state == job_pb2.JOB_STATE_CANCELLED:
        error = {"code": "cancelled", "message": f"cancelled: {status.cancelled.reason}"}
    if job.HasField("result"):
        parameters = job.result.parameters
        model, prompt = parameters.model, parameters.prompt
        seconds = f"{job.result.duration_seconds:g}"
        size = f"{parameters.width}x{parameters.height}"
    progress = 100 if state == "completed" else int(status.progress.fraction * 100)
    return {
        "id": status.job_id,
        "object": "video",
        "created_at": _seconds(status.create_time) or int(time.time()),
        "status": state,
        "model": model,
        "prompt": prompt or None,
        "progress": progress,
        "seconds": seconds,
        "size": size,
        "completed_at": _seconds(status.end_time) if state == "completed" else None,
        "expires_at": None,
        "error": error,
        "remixed_from_video_id": None,
    }


def queued_object(job_id: str, call: VideoCall) -> dict:
    job = video_pb2.Job()
    job.status.job_id = job_id
    job.status.state = job_pb2.JOB_STATE_QUEUED
    job.status.create_time.GetCurrentTime()
    request = call.request
    return video_object(job, model=request.model, seconds=call.seconds, size=call.size, prompt=request.prompt)
