"""Protobuf <-> Image domain types, with the validation that names fields and ranges."""

from __future__ import annotations

from genmesh.common.v1 import artifact_pb2, diffusion_pb2, media_pb2
from genmesh.errors import InvalidArgument, require, require_range, shown
from genmesh.image.v1 import image_pb2
from servers.diffusion.generate import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MAX_STEPS,
)
from servers.diffusion.generate import MAX_SIDE as MAX_SIZE
from servers.diffusion.generate import MIN_SIDE as MIN_SIZE
from servers.image.engine import ImageOutcome
from servers.image.records import SavedImage
from servers.image.types import ImageFormat, ImageRequest, ObjectLocation
from servers.runtime import convert as common
from servers.runtime import events
from servers.runtime.convert import MEMORY_MODES, SCHEDULER_ENUMS, SCHEDULERS
from servers.runtime.queue import Job
from storage.keys import validate_bucket, validate_key
from storage.object_store import StoredObject

FORMATS = {
    media_pb2.IMAGE_FORMAT_UNSPECIFIED: ImageFormat.PNG,
    media_pb2.IMAGE_FORMAT_PNG: ImageFormat.PNG,
    media_pb2.IMAGE_FORMAT_WEBP: ImageFormat.WEBP,
    media_pb2.IMAGE_FORMAT_JPEG: ImageFormat.JPEG,
}
FORMAT_ENUMS = {ImageFormat.PNG: media_pb2.IMAGE_FORMAT_PNG, ImageFormat.WEBP: media_pb2.IMAGE_FORMAT_WEBP,
                ImageFormat.JPEG: media_pb2.IMAGE_FORMAT_JPEG}  # fmt: skip


def _size(message: image_pb2.GenerateImageRequest, name: str) -> int | None:
    if not message.HasField(name):
        return None
    value = getattr(message, name)
    require_range(value, name, MIN_SIZE, MAX_SIZE)
    require(value % 8 == 0, name, f"must be a multiple of 8 (got {value})")
    return value


def generate_image_request(message: image_pb2.GenerateImageRequest) -> ImageRequest:
    require(bool(message.prompt.strip()), "prompt", "must not be empty")
    require(len(message.prompt) <= MAX_PROMPT_CHARS, "prompt", f"at most {MAX_PROMPT_CHARS} characters")
    require(
        len(message.negative_prompt) <= MAX_PROMPT_CHARS, "negative_prompt", f"at most {MAX_PROMPT_CHARS} characters"
    )
    steps = message.steps if message.HasField("steps") else DEFAULT_STEPS
    require_range(steps, "steps", 1, MAX_STEPS)
    guidance = message.guidance_scale if message.HasField("guidance_scale") else DEFAULT_GUIDANCE
    require_range(guidance, "guidance_scale", 0.0, MAX_GUIDANCE)
    num_images = message.num_images if message.HasField("num_images") else 1
    require_range(num_images, "num_images", 1, MAX_IMAGES)
    seed = message.seed if message.HasField("seed") else None
    if seed is not None:
        require_range(seed, "seed", 0, 2**32 - 1)
    scheduler = None
    if message.scheduler != diffusion_pb2.SCHEDULER_UNSPECIFIED:
        require(message.scheduler in SCHEDULERS, "scheduler", f"unknown scheduler value {message.scheduler}")
        scheduler = SCHEDULERS[message.scheduler]
    require(message.output_format in FORMATS, "output_format", f"unknown format value {message.output_format}")
    quality = message.quality if message.HasField("quality") else 90
    if FORMATS[message.output_format] is not ImageFormat.PNG:  # documented as ignored for PNG
        require_range(quality, "quality", 1, 100)
    else:
        quality = 90
    require_range(message.preview_interval_steps, "preview_interval_steps", 0, MAX_STEPS)

    init_data, init_ref = None, None
    source = message.WhichOneof("init_image")
    if source == "init_image_data":
        require(len(message.init_image_data) > 0, "init_image_data", "must not be empty")
        init_data = message.init_image_data
    elif source == "init_image_ref":
        ref = message.init_image_ref
        validate_bucket(ref.bucket, "init_image_ref.bucket")
        init_ref = ObjectLocation(ref.bucket, validate_key(ref.key, "init_image_ref.key"))
    strength = None
    if message.HasField("strength"):
        if source is None:
            raise InvalidArgument("strength: only allowed with an init image (img2img)", field="strength")
        strength = message.strength
        require(0.0 < strength <= 1.0, "strength", f"must be in (0, 1] (got {shown(strength)})")
    elif source is not None:
        strength = DEFAULT_STRENGTH
    if strength is not None:  # img2img runs int(steps x strength) steps: at least one must run
        require(
            int(steps * strength) >= 1,
            "strength",
            f"steps x strength must be at least 1, so that a denoising step runs (got {steps} x {shown(strength)})",
        )

    return ImageRequest(
        prompt=message.prompt,
        model=message.model,
        negative_prompt=message.negative_prompt,
        width=_size(message, "width"),
        height=_size(message, "height"),
        steps=steps,
        guidance_scale=guidance,
        seed=seed,
        scheduler=scheduler,
        num_images=num_images,
        init_image_data=init_data,
        init_image_ref=init_ref,
        strength=strength,
        output_format=FORMATS[message.output_format],
        quality=quality,
        return_inline=message.return_inline,
        preview_interval_steps=message.preview_interval_steps,
        keep_alive_seconds=common.keep_alive_seconds(message),
    )


def image_result(
    request: ImageRequest,
    outcome: ImageOutcome,
    saved: list[SavedImage],
    init_image: ObjectLocation | None,
    record: StoredObject,
    timings: image_pb2.Timings,
) -> image_pb2.ImageResult:
    params = outcome.result.params
    return image_pb2.ImageResult(
        images=[
            image_pb2.GeneratedImage(
                index=item.index,
                seed=item.seed,
                artifact=common.artifact(item.stored, item.data if request.return_inline else None),
            )
            for item in saved
        ],
        parameters=image_pb2.ImageParameters(
            model=outcome.model.name,
            model_family=outcome.family,
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            width=params.width or 0,
            height=params.height or 0,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            scheduler=SCHEDULER_ENUMS.get(params.scheduler or "", diffusion_pb2.SCHEDULER_UNSPECIFIED),
            seed=params.seed,
            num_images=params.num_images,
            strength=params.strength,
            init_image=common_pb2_ref(init_image),
            output_format=FORMAT_ENUMS[request.output_format],
            quality=0 if request.output_format is ImageFormat.PNG else request.quality,
            memory_mode=MEMORY_MODES.get(outcome.memory_mode, diffusion_pb2.MEMORY_MODE_UNSPECIFIED),
            device=outcome.device,
        ),
        timings=timings,
        record=common.artifact(record),
    )


def common_pb2_ref(location: ObjectLocation | None) -> artifact_pb2.ObjectRef | None:
    return artifact_pb2.ObjectRef(bucket=location.bucket, key=location.key) if location else None


def stream_event(job: Job, event: events.JobEvent) -> image_pb2.GenerateImageResponse:
    fields = common.common_event_fields(job, event)
    match event:
        case events.ProgressEvent():
            fields["progress_update"] = image_pb2.ProgressUpdate(stage=image_pb2.STAGE_DENOISING)
        case events.Output(payload=events.StageChanged(stage=stage)):
            fields["progress_update"] = image_pb2.ProgressUpdate(stage=common.stage_value(image_pb2.Stage, stage))
        case events.Succeeded(result=result):
            fields["result"] = result
    return image_pb2.GenerateImageResponse(**fields)


def job_message(job: Job) -> image_pb2.Job:
    return image_pb2.Job(status=common.job_status(job), result=job.result)
