"""Protobuf <-> Video domain types, with the validation that names fields and ranges."""

from __future__ import annotations

from genmesh.video.v1 import video_pb2
from servers.diffusion import animate
from servers.diffusion import params as spec
from servers.diffusion.families import Task
from servers.diffusion.params import VIDEO, optional, require
from servers.media.video import VideoFormat
from servers.runtime import convert as common
from servers.video.engine import VideoOutcome
from servers.video.records import SavedVideo
from servers.video.types import VideoRequest
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


def generate_video_request(message: video_pb2.GenerateVideoRequest) -> VideoRequest:
    """Presence and oneof rules here; every value's limits from ``servers.diffusion.params``. Unset
    size, frames, steps, guidance and strength stay ``None``: the model's defaults are chosen at
    ``prepare``, once the init media is known."""
    shared = common.diffusion_fields(message, VIDEO)
    require(message.output_format in FORMATS, "output_format", f"must be a known format (got {message.output_format})")
    spec.check_prompt_schedule(message.prompt_schedule)

    source = message.WhichOneof("init")
    image_data, image_ref = common.media_input(message, source, "init_image")
    video_data, video_ref = common.media_input(message, source, "init_video")
    require(source is not None or not message.HasField("strength"), "strength",
            "is only allowed with an init image or video")  # fmt: skip
    return VideoRequest(
        **shared,
        motion_adapter=message.motion_adapter,
        num_frames=optional(VIDEO, message, "num_frames"),
        fps=optional(VIDEO, message, "fps") or animate.DEFAULT_FPS,
        output_format=FORMATS[message.output_format],
        save_frames=message.save_frames,
        init_image_data=image_data,
        init_image_ref=image_ref,
        init_video_data=video_data,
        init_video_ref=video_ref,
        strength=optional(VIDEO, message, "strength"),
        prompt_schedule=dict(message.prompt_schedule),
    )


def video_parameters(
    request: VideoRequest, outcome: VideoOutcome, init_media: ObjectLocation | None
) -> video_pb2.VideoParameters:
    """What made the video (as run, defaults filled): in the result and in the job's record."""
    output = outcome.output
    params = output.params
    return video_pb2.VideoParameters(
        **common.run_parameters(params, outcome.loaded, request.defaults_note),
        model=outcome.model.name,
        motion_adapter=outcome.motion_adapter.name,
        num_frames=len(output.frames),
        fps=request.fps,
        output_format=FORMAT_ENUMS[request.output_format],
        task=TASKS[params.task],
        init_media=common.object_ref(init_media),
        context_length=output.context_length,
        context_stride=output.context_stride,
        prompt_schedule=params.prompt_schedule,
        decode_chunk_size=output.decode_chunk_size,
        low_memory_retry=output.low_memory_retry,
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
