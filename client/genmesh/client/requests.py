"""Keyword arguments -> request messages (shared by the sync and async clients)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2

from genmesh import errors
from genmesh.agent.v1 import agent_pb2
from genmesh.common.v1 import diffusion_pb2, media_pb2
from genmesh.image.v1 import image_pb2
from genmesh.models.v1 import models_pb2
from genmesh.text.v1 import text_pb2
from genmesh.training.v1 import training_pb2
from genmesh.video.v1 import video_pb2

ChatMessages = Sequence[Mapping[str, str] | tuple[str, str] | text_pb2.ChatMessage]


def sampling(
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    repeat_penalty: float | None = None,
    seed: int | None = None,
    stop: Iterable[str] = (),
) -> text_pb2.SamplingOptions:
    options = text_pb2.SamplingOptions(stop=list(stop))
    values = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "repeat_penalty": repeat_penalty,
        "seed": seed,
    }
    for name, value in values.items():
        if value is not None:
            setattr(options, name, value)
    return options


def response_format(json: bool, json_schema: Mapping[str, Any] | None) -> text_pb2.ResponseFormat | None:
    if json_schema is not None:
        schema = struct_pb2.Struct()
        schema.update(dict(json_schema))
        return text_pb2.ResponseFormat(type=text_pb2.ResponseFormat.TYPE_JSON, json_schema=schema)
    if json:
        return text_pb2.ResponseFormat(type=text_pb2.ResponseFormat.TYPE_JSON)
    return None


def chat_messages(messages: ChatMessages) -> list[text_pb2.ChatMessage]:
    result = []
    for message in messages:
        if isinstance(message, text_pb2.ChatMessage):
            result.append(message)
        elif isinstance(message, tuple):
            result.append(text_pb2.ChatMessage(role=message[0], content=message[1]))
        else:
            result.append(text_pb2.ChatMessage(role=message["role"], content=message["content"]))
    return result


def generate_request(
    prompt: str,
    *,
    model: str = "",
    detach: bool = False,
    notify_url: str = "",
    json: bool = False,
    json_schema: Any = None,
    logprobs: int | None = None,
    **options: Any,
) -> text_pb2.GenerateRequest:
    """``logprobs=N`` asks for each token's log probability and its N likeliest alternatives."""
    return text_pb2.GenerateRequest(
        model=model,
        prompt=prompt,
        sampling=sampling(**options),
        response_format=response_format(json, json_schema),
        detach=detach,
        notify_url=notify_url,
        logprobs=logprobs,
    )


def chat_request(
    messages: ChatMessages,
    *,
    model: str = "",
    detach: bool = False,
    notify_url: str = "",
    json: bool = False,
    json_schema: Any = None,
    logprobs: int | None = None,
    **options: Any,
) -> text_pb2.ChatRequest:
    return text_pb2.ChatRequest(
        model=model,
        messages=chat_messages(messages),
        sampling=sampling(**options),
        response_format=response_format(json, json_schema),
        detach=detach,
        notify_url=notify_url,
        logprobs=logprobs,
    )


def _scheduler_short_name(enum_name: str) -> str:
    """``SCHEDULER_DPMPP_2M_KARRAS`` -> ``dpmpp_2m_karras``; ``SCHEDULER_EULER_ANCESTRAL`` -> ``euler_a``
    (A1111's name, which every UI shows)."""
    return enum_name.removeprefix("SCHEDULER_").lower().replace("_ancestral", "_a")


# Scheduler name -> proto enum name: the one table of scheduler names, read from the proto enum (the
# servers map names to diffusers classes in servers.diffusion.schedulers; a test keeps them equal).
SCHEDULERS = {
    _scheduler_short_name(value.name): value.name
    for value in diffusion_pb2.Scheduler.DESCRIPTOR.values
    if value.number != diffusion_pb2.SCHEDULER_UNSPECIFIED
}
IMAGE_FORMATS = {"png": "IMAGE_FORMAT_PNG", "webp": "IMAGE_FORMAT_WEBP", "jpeg": "IMAGE_FORMAT_JPEG"}


Loras = Mapping[str, float] | Sequence[tuple[str, float] | str] | None


def image_request(
    prompt: str,
    *,
    model: str = "",
    negative_prompt: str = "",
    width: int | None = None,
    height: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    scheduler: str | None = None,
    num_images: int | None = None,
    init_image: bytes | None = None,
    init_image_ref: tuple[str, str] | None = None,
    strength: float | None = None,
    output_format: str = "png",
    quality: int | None = None,
    return_inline: bool = False,
    preview_interval_steps: int = 0,
    detach: bool = False,
    notify_url: str = "",
    loras: Loras = None,
    mask_image: bytes | None = None,
    mask_image_ref: tuple[str, str] | None = None,
) -> image_pb2.GenerateImageRequest:
    """Keyword arguments -> GenerateImageRequest; unknown scheduler/format names raise ValueError.
    ``loras``: {name: weight} or [(name, weight)] or names (weight 1.0); ``mask_image`` (bytes) or
    ``mask_image_ref`` ((bucket, key)) inpaints the init image (white re-draws)."""
    request = image_pb2.GenerateImageRequest(
        model=model,
        prompt=prompt,
        negative_prompt=negative_prompt,
        return_inline=return_inline,
        preview_interval_steps=preview_interval_steps,
        detach=detach,
        notify_url=notify_url,
    )
    optional = {
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "num_images": num_images,
        "strength": strength,
        "quality": quality,
    }
    for name, value in optional.items():
        if value is not None:
            setattr(request, name, value)
    if scheduler:
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)} (got {scheduler!r})")
        request.scheduler = diffusion_pb2.Scheduler.Value(SCHEDULERS[scheduler])
    if output_format not in IMAGE_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(IMAGE_FORMATS)} (got {output_format!r})")
    request.output_format = media_pb2.ImageFormat.Value(IMAGE_FORMATS[output_format])
    if init_image is not None:
        request.init_image_data = init_image
    elif init_image_ref is not None:
        request.init_image_ref.bucket, request.init_image_ref.key = init_image_ref
    if mask_image is not None and mask_image_ref is not None:
        raise ValueError("give mask_image or mask_image_ref, not both")
    if mask_image is not None:
        request.mask_image_data = mask_image
    elif mask_image_ref is not None:
        request.mask_image_ref.bucket, request.mask_image_ref.key = mask_image_ref
    request.loras.extend(lora_weights(loras))
    return request


def lora_weights(loras: Loras) -> list[diffusion_pb2.LoraWeight]:
    """{name: weight}, [(name, weight)] or [name] (weight 1.0) -> LoraWeight messages, in order."""
    if not loras:
        return []
    items = loras.items() if isinstance(loras, Mapping) else loras
    pairs = [(item, 1.0) if isinstance(item, str) else item for item in items]
    return [diffusion_pb2.LoraWeight(name=name, weight=float(weight)) for name, weight in pairs]


VIDEO_FORMATS = {"gif": "VIDEO_FORMAT_GIF", "mp4": "VIDEO_FORMAT_MP4", "webp": "VIDEO_FORMAT_WEBP"}


def video_request(
    prompt: str,
    *,
    model: str = "",
    motion_adapter: str = "",
    negative_prompt: str = "",
    width: int | None = None,
    height: int | None = None,
    num_frames: int | None = None,
    fps: int | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    scheduler: str | None = None,
    output_format: str = "gif",
    return_inline: bool = False,
    save_frames: bool = False,
    preview_interval_steps: int = 0,
    detach: bool = False,
    notify_url: str = "",
    init_image: bytes | None = None,
    init_image_ref: tuple[str, str] | None = None,
    init_video: bytes | None = None,
    init_video_ref: tuple[str, str] | None = None,
    strength: float | None = None,
    prompt_schedule: Mapping[int, str] | None = None,
    loras: Loras = None,
) -> video_pb2.GenerateVideoRequest:
    """Keyword arguments -> GenerateVideoRequest; unknown scheduler/format names, or more than one
    of init_image / init_image_ref / init_video / init_video_ref, raise ValueError."""
    if scheduler and scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)} (got {scheduler!r})")
    if output_format not in VIDEO_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(VIDEO_FORMATS)} (got {output_format!r})")
    inits = {
        "init_image": init_image,
        "init_image_ref": init_image_ref,
        "init_video": init_video,
        "init_video_ref": init_video_ref,
    }
    given = [name for name, value in inits.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of init_image, init_image_ref, init_video, init_video_ref (got {given})")
    request = video_pb2.GenerateVideoRequest(
        model=model,
        motion_adapter=motion_adapter,
        prompt=prompt,
        negative_prompt=negative_prompt,
        output_format=video_pb2.VideoFormat.Value(VIDEO_FORMATS[output_format]),
        return_inline=return_inline,
        save_frames=save_frames,
        preview_interval_steps=preview_interval_steps,
        detach=detach,
        notify_url=notify_url,
    )
    optional = {
        "width": width,
        "height": height,
        "num_frames": num_frames,
        "fps": fps,
        "steps": steps,
        "guidance_scale": guidance_scale,
        "seed": seed,
        "strength": strength,
    }
    for name, value in optional.items():
        if value is not None:
            setattr(request, name, value)
    if scheduler:
        request.scheduler = diffusion_pb2.Scheduler.Value(SCHEDULERS[scheduler])
    if init_image is not None:
        request.init_image_data = init_image
    elif init_image_ref is not None:
        request.init_image_ref.bucket, request.init_image_ref.key = init_image_ref
    elif init_video is not None:
        request.init_video_data = init_video
    elif init_video_ref is not None:
        request.init_video_ref.bucket, request.init_video_ref.key = init_video_ref
    if prompt_schedule:
        request.prompt_schedule.update({int(frame): text for frame, text in prompt_schedule.items()})
    request.loras.extend(lora_weights(loras))
    return request


CONTENT_KINDS = {
    "documents": "CONTENT_KIND_DOCUMENTS",
    "textures": "CONTENT_KIND_TEXTURES",
    "shapes": "CONTENT_KIND_SHAPES",
}
TRAINING_ARCHITECTURES = {"tiny": "ARCHITECTURE_TINY", "small": "ARCHITECTURE_SMALL", "base": "ARCHITECTURE_BASE"}


def synthetic_data_request(
    *,
    num_images: int | None = None,
    degradation_type: str = "",
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    content_kinds: Iterable[str] = (),
    dataset_name: str = "",
    notify_url: str = "",
) -> training_pb2.GenerateSyntheticDataRequest:
    request = training_pb2.GenerateSyntheticDataRequest(
        degradation_type=degradation_type, dataset_name=dataset_name, notify_url=notify_url
    )
    for name, value in {"num_images": num_images, "seed": seed, "width": width, "height": height}.items():
        if value is not None:
            setattr(request, name, value)
    for kind in content_kinds:
        if kind not in CONTENT_KINDS:
            raise ValueError(f"content kind must be one of {', '.join(CONTENT_KINDS)} (got {kind!r})")
        request.content_kinds.append(training_pb2.ContentKind.Value(CONTENT_KINDS[kind]))
    return request


def training_spec(
    *,
    layer: int = 0,  # required to create a job; a resume may leave it out (the job's own is kept)
    dataset_prefix: str = "",
    num_epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    max_pairs: int | None = None,
    patch_size: int | None = None,
    validation_split: float | None = None,
    seed: int | None = None,
    architecture: str | None = None,
    description: str = "",
) -> training_pb2.TrainingJobSpec:
    spec = training_pb2.TrainingJobSpec(layer=layer, dataset_prefix=dataset_prefix, description=description)
    optional = {
        "num_epochs": num_epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_pairs": max_pairs,
        "patch_size": patch_size,
        "validation_split": validation_split,
        "seed": seed,
    }
    for name, value in optional.items():
        if value is not None:
            setattr(spec, name, value)
    if architecture:
        if architecture not in TRAINING_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(TRAINING_ARCHITECTURES)} (got {architecture!r})")
        spec.architecture = training_pb2.Architecture.Value(TRAINING_ARCHITECTURES[architecture])
    return spec


def restore_request(
    model_id: str,
    *,
    image: bytes | None = None,
    image_ref: tuple[str, str] | None = None,
    tile_size: int | None = None,
    tile_overlap: int | None = None,
    output_format: str = "png",
    quality: int | None = None,
    return_inline: bool = False,
    notify_url: str = "",
) -> training_pb2.RestoreImageRequest:
    request = training_pb2.RestoreImageRequest(model_id=model_id, return_inline=return_inline, notify_url=notify_url)
    if image is not None:
        request.image_data = image
    elif image_ref is not None:
        request.image_ref.bucket, request.image_ref.key = image_ref
    for name, value in {"tile_size": tile_size, "tile_overlap": tile_overlap, "quality": quality}.items():
        if value is not None:
            setattr(request, name, value)
    if output_format not in IMAGE_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(IMAGE_FORMATS)} (got {output_format!r})")
    request.output_format = media_pb2.ImageFormat.Value(IMAGE_FORMATS[output_format])
    return request


AGENT_STAGES = ("text", "image", "video")


def character_request(
    idea: str = "",
    *,
    style: str = "",
    seed: int | None = None,
    steps: int | None = None,
    text: Mapping[str, Any] | None = None,
    image: Mapping[str, Any] | None = None,
    video: Mapping[str, Any] | None = None,
    stages: Sequence[str] = (),
    sheet: Mapping[str, str] | None = None,
    portrait_ref: tuple[str, str] | None = None,
    detach: bool = False,
    notify_url: str = "",
) -> agent_pb2.CreateCharacterRequest:
    """Keyword arguments -> CreateCharacterRequest. ``text``/``image``/``video`` are the stage options as
    dicts (e.g. ``image={"width": 512, "scheduler": "euler_a"}``, ``video={"num_frames": 16,
    "output_format": "mp4"}``); ``stages`` are names ("text", "image", "video"); unknown names raise ValueError."""
    request = agent_pb2.CreateCharacterRequest(idea=idea, style=style, detach=detach, notify_url=notify_url)
    for name, value in {"seed": seed, "steps": steps}.items():
        if value is not None:
            setattr(request, name, value)
    image_options = dict(image or {})
    if image_options.get("scheduler"):
        if image_options["scheduler"] not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)} (got {image_options['scheduler']!r})")
        image_options["scheduler"] = SCHEDULERS[image_options["scheduler"]]
    video_options = dict(video or {})
    if video_options.get("output_format"):
        if video_options["output_format"] not in VIDEO_FORMATS:
            allowed = ", ".join(VIDEO_FORMATS)
            raise ValueError(f"output_format must be one of {allowed} (got {video_options['output_format']!r})")
        video_options["output_format"] = VIDEO_FORMATS[video_options["output_format"]]
    request.text.CopyFrom(agent_pb2.TextStageOptions(**dict(text or {})))
    request.image.CopyFrom(agent_pb2.ImageStageOptions(**image_options))
    request.video.CopyFrom(agent_pb2.VideoStageOptions(**video_options))
    for stage in stages:
        if stage not in AGENT_STAGES:
            raise ValueError(f"stages must be among {', '.join(AGENT_STAGES)} (got {stage!r})")
        request.stages.append(agent_pb2.Stage.Value(f"STAGE_{stage.upper()}"))
    if sheet is not None:
        request.sheet.CopyFrom(agent_pb2.CharacterSheet(**dict(sheet)))
    if portrait_ref is not None:
        request.portrait_ref.bucket, request.portrait_ref.key = portrait_ref
    return request


# -- models (genmesh.models.v1) ------------------------------------------------------------------
MODEL_KINDS = {"": 0, "text": 1, "image": 2, "motion": 3}  # ModelKind values by name


def pull_request(
    ref: str, *, no_verify: bool = False, allow_pickle: bool = False, name: str = "", detach: bool = False
) -> models_pb2.PullModelRequest:
    return models_pb2.PullModelRequest(
        ref=ref, no_verify=no_verify, allow_pickle=allow_pickle, name=name, detach=detach
    )


def delete_model_request(name: str, kind: str = "") -> models_pb2.DeleteModelRequest:
    if kind not in MODEL_KINDS:
        names = ", ".join(name for name in MODEL_KINDS if name)
        raise errors.InvalidArgument(f"kind: one of {names} (got {kind!r})", field="kind")
    return models_pb2.DeleteModelRequest(name=name, kind=MODEL_KINDS[kind])
