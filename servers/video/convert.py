"""Protobuf <-> Video domain types, with the validation that names fields and ranges."""

from __future__ import annotations

from genmesh.common.v1 import artifact_pb2, diffusion_pb2
from genmesh.video.v1 import video_pb2
from servers.diffusion import animate
from servers.diffusion import params as spec
from servers.diffusion.families import Task
from servers.diffusion.lora import requested_loras
from servers.diffusion.params import VIDEO, optional, require
from servers.media.video import VideoFormat
from servers.runtime import convert as common
from servers.runtime import events
from servers.runtime.convert import MEMORY_MODES, SCHEDULER_ENUMS
from servers.runtime.queue import Job
from servers.video.engine import VideoOutcome
from servers.video.records import SavedVideo
from servers.video.types import VideoRequest
from storage.keys import validate_bucket, validate_key
from storage.object_store import ObjectLocation, StoredObject

FORMATS = {
    video_pb2.VIDEO_FORMAT_UNSPECIFIED: VideoFormat.GIF,
    video_pb2.VIDEO_FORMAT_GIF: VideoFormat.GIF,
    video_pb2.VIDEO_FORMAT_MP4: VideoFormat.MP4,
    video_pb2.VIDEO_FORMAT_WEBP: VideoFormat.WEBP,
}
FORMAT_ENUMS = {VideoFormat.GIF: video_pb2.VIDEO_FORMAT_GIF, VideoFormat.MP4: video_pb2.VIDEO_FORMAT_MP4,
                VideoFormat.WEBP: video_pb2.VIDEO_FORMAT_WEBP}  # fmt: skip
TASKS = {Task.TXT2VID: video_pb2.VIDEO_TASK_TEXT_TO_VIDEO, Task.IMG2VID: video_pb2.VIDEO_TASK_IMAGE_TO_VIDEO,
         Task.VID2VID: video_pb2.VIDEO_TASK_VIDEO_TO_VIDEO}  # fmt: skip


def _location(ref: artifact_pb2.ObjectRef, field: str) -> ObjectLocation:
    validate_bucket(ref.bucket, f"{field}.bucket")
    return ObjectLocation(ref.bucket, validate_key(ref.key, f"{field}.key"))


def generate_video_request(message: video_pb2.GenerateVideoRequest) -> VideoRequest:
    """Presence and oneof rules here; every value's limits from ``servers.diffusion.params``. Unset
    size, frames, steps, guidance and strength stay ``None``: the model's defaults are chosen at
    ``prepare``, once the init media is known."""
    spec.check(VIDEO, "prompt", message.prompt)
    spec.check(VIDEO, "negative_prompt", message.negative_prompt)
    scheduler = common.scheduler_name(message.scheduler)
    require(message.output_format in FORMATS, "output_format", f"must be a known format (got {message.output_format})")
    spec.check(VIDEO, "preview_interval_steps", message.preview_interval_steps)
    spec.check_prompt_schedule(message.prompt_schedule)
    prompt, loras = requested_loras(message.prompt, common.lora_requests(message.loras))

    source = message.WhichOneof("init")
    if source == "init_image_data":
        require(len(message.init_image_data) > 0, "init_image_data", "must not be empty")
    if source == "init_video_data":
        require(len(message.init_video_data) > 0, "init_video_data", "must not be empty")
    require(source is not None or not message.HasField("strength"), "strength",
            "is only allowed with an init image or video")  # fmt: skip
    return VideoRequest(
        prompt=prompt,
        model=message.model,
        motion_adapter=message.motion_adapter,
        negative_prompt=message.negative_prompt,
        width=optional(VIDEO, message, "width"),
        height=optional(VIDEO, message, "height"),
        num_frames=optional(VIDEO, message, "num_frames"),
        fps=optional(VIDEO, message, "fps") or animate.DEFAULT_FPS,
        steps=optional(VIDEO, message, "steps"),
        guidance_scale=optional(VIDEO, message, "guidance_scale"),
        seed=optional(VIDEO, message, "seed"),
        scheduler=scheduler,
        output_format=FORMATS[message.output_format],
        return_inline=message.return_inline,
        save_frames=message.save_frames,
        preview_interval_steps=message.preview_interval_steps,
        init_image_data=message.init_image_data if source == "init_image_data" else None,
        init_image_ref=_location(message.init_image_ref, "init_image_ref") if source == "init_image_ref" else None,
        init_video_data=message.init_video_data if source == "init_video_data" else None,
        init_video_ref=_location(message.init_video_ref, "init_video_ref") if source == "init_video_ref" else None,
        strength=optional(VIDEO, message, "strength"),
        prompt_schedule=dict(message.prompt_schedule),
        keep_alive_seconds=common.keep_alive_seconds(message),
        loras=loras,
    )


def video_parameters(
    request: VideoRequest, outcome: VideoOutcome, init_media: ObjectLocation | None
) -> video_pb2.VideoParameters:
    """What made the video (as run, defaults filled): in the result and in the job's record."""
    output = outcome.output
    params = output.params
    return video_pb2.VideoParameters(
        model=outcome.model.name,
        motion_adapter=outcome.motion_adapter.name,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width or 0,
        height=params.height or 0,
        num_frames=len(output.frames),
        fps=request.fps,
        steps=params.steps,
        guidance_scale=params.guidance_scale,
        seed=params.seed,
        scheduler=SCHEDULER_ENUMS.get(params.scheduler or "", diffusion_pb2.SCHEDULER_UNSPECIFIED),
        output_format=FORMAT_ENUMS[request.output_format],
        memory_mode=MEMORY_MODES.get(outcome.loaded.memory_mode, diffusion_pb2.MEMORY_MODE_UNSPECIFIED),
        device=outcome.loaded.device,
        task=TASKS[params.task],
        strength=params.strength,
        init_media=common.object_ref(init_media),
        context_length=output.context_length,
        context_stride=output.context_stride,
        prompt_schedule=params.prompt_schedule,
        decode_chunk_size=output.decode_chunk_size,
        low_memory_retry=output.low_memory_retry,
        loras=common.applied_loras(params.loras),
        defaults_note=request.defaults_note,
    )


def video_result(
    request: VideoRequest,
    saved: SavedVideo,
    parameters: video_pb2.VideoParameters,
    record: StoredObject | None,
    timings: video_pb2.Timings,
) -> video_pb2.VideoResult:
    inline = request.return_inline
    return video_pb2.VideoResult(
        video=common.artifact(saved.video, saved.video_data if inline else None),
        poster=common.artifact(saved.poster, saved.poster_data if inline else None),
        frames=[common.artifact(stored, data if inline else None) for stored, data in saved.frames],
        num_frames=parameters.num_frames,
        fps=request.fps,
        duration_seconds=parameters.num_frames / request.fps,
        seed=parameters.seed,
        parameters=parameters,
        timings=timings,
        record=common.artifact(record),
    )


def stream_event(job: Job, event: events.JobEvent) -> video_pb2.GenerateVideoResponse:
    fields = common.common_event_fields(job, event)
    match event:
        case events.ProgressEvent():
            fields["progress_update"] = video_pb2.ProgressUpdate(stage=video_pb2.STAGE_DENOISING)
        case events.Output(payload=events.StageChanged(stage=stage, done=done, total=total)):
            fields["progress_update"] = video_pb2.ProgressUpdate(
                stage=common.stage_value(video_pb2.Stage, stage), frames_decoded=done, total_frames=total
            )
        case events.Succeeded(result=result):
            fields["result"] = result
    return video_pb2.GenerateVideoResponse(**fields)


def job_message(job: Job) -> video_pb2.Job:
    return video_pb2.Job(status=common.job_status(job), result=job.result)
