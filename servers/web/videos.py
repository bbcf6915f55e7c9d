"""``/v1/videos``: OpenAI's asynchronous video API on genmesh's video jobs. Create starts a detached
GenerateVideo job and answers with its id at once; retrieve, content and delete are GetJob and
CancelJob on that id. Nothing is kept here: the job is the video."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from genmesh.common.v1 import job_pb2
from genmesh.video.v1 import video_pb2
from servers.diffusion.params import VIDEO
from servers.web.errors import invalid
from servers.web.fields import Body, Form, assign, parse_size

# Frames are seconds x fps. The video service's own default rate (8 fps) is sent explicitly when the
# caller names no fps, so that the frame count is known here; the service checks both ranges.
DEFAULT_FPS = 8
OUTPUT_FORMATS = {
    "mp4": video_pb2.VIDEO_FORMAT_MP4,
    "gif": video_pb2.VIDEO_FORMAT_GIF,
    "webp": video_pb2.VIDEO_FORMAT_WEBP,
}
EXTRAS = (("seed", "integer"), ("negative_prompt", "string"), ("steps", "integer"), ("guidance_scale", "number"),
          ("strength", "number"), ("motion_adapter", "string"))  # fmt: skip
CREATE_FIELDS = ("prompt", "model", "seconds", "size", "fps", "output_format", "input_reference",
                 *(name for name, _ in EXTRAS))  # fmt: skip
PARAMS = {"num_frames": "seconds", "width": "size", "height": "size", "init_image_data": "input_reference",
          "init_video_data": "input_reference"}  # fmt: skip
STATUSES = {
    job_pb2.JOB_STATE_QUEUED: "queued",
    job_pb2.JOB_STATE_RUNNING: "in_progress",
    job_pb2.JOB_STATE_SUCCEEDED: "completed",
    job_pb2.JOB_STATE_FAILED: "failed",
    job_pb2.JOB_STATE_CANCELLED: "failed",  # OpenAI's videos have no cancelled state: failed, code "cancelled"
}
VARIANTS = ("video", "thumbnail")


@dataclass
class VideoCall:
    request: video_pb2.GenerateVideoRequest
    seconds: str
    size: str
    params: dict[str, str] = field(default_factory=lambda: dict(PARAMS))


LIST_DEFAULT, LIST_MAX = 20, 100  # GET /v1/videos?limit=: OpenAI's default and most


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
        if seconds is None:
            raise invalid("seconds", f'seconds: expected a number of seconds such as "4" (got {raw!r})')
        assign(request, "num_frames", round(seconds * fps), "seconds", VIDEO)
    width, height = parse_size(fields.get("size", "string"))
    if width is not None:
        assign(request, "width", width, "size", VIDEO)
        assign(request, "height", height, "size", VIDEO)
    for name, kind in EXTRAS:
        value = fields.get(name, kind)
        if value is not None:
            assign(request, name, value, name, VIDEO)
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
