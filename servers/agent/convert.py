"""Protobuf <-> Agent domain types, with the validation that names fields and ranges."""

from __future__ import annotations

from typing import Any

from genmesh.agent.v1 import agent_pb2
from genmesh.client.requests import VIDEO_FORMATS
from genmesh.common.v1 import artifact_pb2
from genmesh.video.v1 import video_pb2
from servers.agent.types import (
    SHEET_LIMITS,
    STAGES,
    CharacterRequest,
    CharacterSheet,
    ImageOptions,
    StageDone,
    StageProgress,
    StageStarted,
    TextOptions,
    VideoOptions,
)
from servers.diffusion.lora import LoraRequest, check_loras
from servers.diffusion.params import IMAGE, SEED, STEPS, VIDEO, Limit, Text, optional, require
from servers.runtime import convert as common
from servers.runtime import events
from servers.runtime.queue import Job
from storage.keys import validate_bucket, validate_key
from storage.object_store import ObjectLocation

# The agent's own fields; the image and video stages' options use the Image and Video services' specs.
AGENT = {"idea": Text(2000), "style": Text(200), "seed": SEED, "steps": STEPS}
# The text stage asks for a character sheet: too few tokens cannot hold one.
TEXT_STAGE = {"max_tokens": Limit(64, 4096), "temperature": Limit(0.0, 2.0), "seed": SEED}
FORMAT_NAMES = {video_pb2.VideoFormat.Value(enum): name for name, enum in VIDEO_FORMATS.items()}
FORMAT_NAMES[video_pb2.VIDEO_FORMAT_UNSPECIFIED] = "gif"


def _loras(message: Any, field: str) -> tuple[LoraRequest, ...]:
    """A stage's LoRAs, checked by the services' own rules (names are found by the service)."""
    loras = tuple(common.lora_requests(message.loras))
    check_loras(loras, field)
    return loras


def stage_names(values: Any) -> tuple[str, ...]:
    """``stages`` -> names, checked: known values, in order, without gaps or repeats."""
    if not values:
        return STAGES
    names = []
    for value in values:
        require(value in (agent_pb2.STAGE_TEXT, agent_pb2.STAGE_IMAGE, agent_pb2.STAGE_VIDEO), "stages",
                f"must be STAGE_TEXT, STAGE_IMAGE or STAGE_VIDEO (got {value})")  # fmt: skip
        names.append(agent_pb2.Stage.Name(value).removeprefix("STAGE_").lower())
    first = STAGES.index(names[0])
    require(
        tuple(names) == STAGES[first : first + len(names)],
        "stages",
        f"must run in the order text, image, video without gaps or repeats (got {', '.join(names)})",
    )
    return tuple(names)


def _text_options(message: agent_pb2.TextStageOptions) -> TextOptions:
    max_tokens = optional(TEXT_STAGE, message, "max_tokens", "text.")
    return TextOptions(
        model=message.model,
        max_tokens=max_tokens or TextOptions.max_tokens,
        temperature=optional(TEXT_STAGE, message, "temperature", "text."),
        seed=optional(TEXT_STAGE, message, "seed", "text."),
    )


def _image_options(message: agent_pb2.ImageStageOptions) -> ImageOptions:
    return ImageOptions(
        model=message.model,
        width=optional(IMAGE, message, "width", "image."),
        height=optional(IMAGE, message, "height", "image."),
        guidance_scale=optional(IMAGE, message, "guidance_scale", "image."),
        scheduler=common.scheduler_name(message.scheduler, "image.scheduler"),
        seed=optional(IMAGE, message, "seed", "image."),
        steps=optional(IMAGE, message, "steps", "image."),
        loras=_loras(message, "image.loras"),
    )


def _video_options(message: agent_pb2.VideoStageOptions) -> VideoOptions:
    fmt = message.output_format
    require(fmt in FORMAT_NAMES, "video.output_format", f"must be a known format (got {fmt})")
    return VideoOptions(
        model=message.model,
        motion_adapter=message.motion_adapter,
        num_frames=optional(VIDEO, message, "num_frames", "video."),
        fps=optional(VIDEO, message, "fps", "video."),
        output_format=FORMAT_NAMES[fmt],
        strength=optional(VIDEO, message, "strength", "video."),
        seed=optional(VIDEO, message, "seed", "video."),
        steps=optional(VIDEO, message, "steps", "video."),
        loras=_loras(message, "video.loras"),
    )


def character_sheet(message: agent_pb2.CharacterSheet, field: str = "sheet", *, check: bool = True) -> CharacterSheet:
    """The sheet, every field within ``SHEET_LIMITS`` when ``check`` (a sheet the image stage starts from)."""
    sheet = CharacterSheet(**{name: getattr(message, name) for name in SHEET_LIMITS})
    for name, (low, high) in SHEET_LIMITS.items():
        value = getattr(sheet, name)
        require(len(value) <= high, f"{field}.{name}", f"must be at most {high} characters (got {len(value)})")
        if check and low > 0:
            require(bool(value.strip()), f"{field}.{name}", "must not be empty")
    return sheet


def create_character_request(message: agent_pb2.CreateCharacterRequest) -> CharacterRequest:
    stages = stage_names(message.stages)
    AGENT["idea"].check(message.idea, "idea")
    AGENT["style"].check(message.style, "style")
    if "text" in stages:
        require(bool(message.idea.strip()), "idea", "must not be empty")
    has_sheet = message.HasField("sheet")
    sheet = None
    if has_sheet:
        require("text" not in stages, "sheet", "is only allowed when the text stage does not run")
        sheet = character_sheet(message.sheet, check=stages[0] == "image")
    elif stages[0] == "image":
        require(False, "sheet", "is required when the image stage runs first (no text stage)")
    portrait_ref = None
    if stages == ("video",):
        require(message.HasField("portrait_ref"), "portrait_ref", "is required when only the video stage runs")
        validate_bucket(message.portrait_ref.bucket, "portrait_ref.bucket")
        portrait_ref = ObjectLocation(message.portrait_ref.bucket, validate_key(message.portrait_ref.key,
                                                                                "portrait_ref.key"))  # fmt: skip
        has_motion = sheet is not None and bool(sheet.motion_prompt.strip())
        require(has_motion or bool(message.idea.strip()), "idea",
                "must not be empty when only the video stage runs without sheet.motion_prompt")  # fmt: skip
    else:
        require(not message.HasField("portrait_ref"), "portrait_ref", "is only allowed when only the video stage runs")
    return CharacterRequest(
        idea=message.idea,
        style=message.style,
        seed=optional(AGENT, message, "seed"),
        steps=optional(AGENT, message, "steps"),
        text=_text_options(message.text),
        image=_image_options(message.image),
        video=_video_options(message.video),
        stages=stages,
        sheet=sheet,
        portrait_ref=portrait_ref,
        detach=message.detach,
    )


# -- results and events --------------------------------------------------------------------------------


def stage_enum(stage: str) -> int:
    return common.stage_value(agent_pb2.Stage, stage)


def sheet_message(sheet: CharacterSheet | None) -> agent_pb2.CharacterSheet | None:
    return agent_pb2.CharacterSheet(**sheet.as_dict()) if sheet is not None else None


def stage_result(done: StageDone) -> agent_pb2.StageResult:
    return agent_pb2.StageResult(
        stage=stage_enum(done.stage),
        sub_job_id=done.sub_job_id,
        sheet=sheet_message(done.sheet),
        artifact=common.artifact(done.stored),
        seconds=done.seconds,
    )


def completed_stages(job: Job) -> list[agent_pb2.StageResult]:
    """The stages the job finished, from its history (outputs are kept there)."""
    outputs = [event.payload for event in job.history if isinstance(event, events.Output)]
    return [stage_result(payload) for payload in outputs if isinstance(payload, StageDone)]


def running_stage(job: Job) -> StageStarted | None:
    """The stage started last and not finished, if any."""
    current = None
    for event in job.history:
        if isinstance(event, events.Output) and isinstance(event.payload, StageStarted):
            current = event.payload
        elif isinstance(event, events.Output) and isinstance(event.payload, StageDone):
            current = None
    return current


def failed_stage(job: Job, stages: tuple[str, ...]) -> tuple[str, str]:
    """(stage, sub-job id) of the stage a failure ended: the one running, else the first of ``stages``
    not finished (its service refused the sub-job before accepting it); ("", "") between stages."""
    running = running_stage(job)
    if running is not None:
        return running.stage, running.sub_job_id
    finished = {payload.stage for event in job.history if isinstance(event, events.Output)
                and isinstance(payload := event.payload, StageDone)}  # fmt: skip
    return next((stage for stage in stages if stage not in finished), ""), ""


def stream_event(
    job: Job, event: events.JobEvent, stages: tuple[str, ...] = STAGES
) -> agent_pb2.CreateCharacterResponse:
    """One stream event; ``stages`` are the stages the job runs (to name one that failed before it started)."""
    fields = common.common_event_fields(job, event)
    match event:
        case events.Output(payload=StageStarted(stage=stage, sub_job_id=sub_job_id, service=service)):
            fields["stage_started"] = agent_pb2.StageStarted(
                stage=stage_enum(stage), sub_job_id=sub_job_id, service=service
            )
        case events.Output(payload=StageProgress() as update):
            fields["stage_progress"] = agent_pb2.StageProgress(
                stage=stage_enum(update.stage),
                sub_job_id=update.sub_job_id,
                sub_progress=update.sub_progress,
                sub_stage=update.sub_stage,
            )
        case events.Output(payload=StageDone() as done):
            fields["stage_result"] = stage_result(done)
        case events.Succeeded(result=result):
            fields["result"] = result
        case events.Failed(code=code, message=message):
            stage, sub_job_id = failed_stage(job, stages)
            fields["error"] = agent_pb2.CharacterError(
                code=code,
                message=message,
                stage=stage_enum(stage) if stage else agent_pb2.STAGE_UNSPECIFIED,
                sub_job_id=sub_job_id,
                completed_stages=completed_stages(job),
            )
        case events.CancelledEvent(reason=reason):
            running = running_stage(job)
            fields["cancelled"] = agent_pb2.CharacterCancelled(
                reason=reason,
                stage=stage_enum(running.stage) if running else agent_pb2.STAGE_UNSPECIFIED,
                completed_stages=completed_stages(job),
            )
    return agent_pb2.CreateCharacterResponse(**fields)


def job_message(job: Job) -> agent_pb2.Job:
    return agent_pb2.Job(status=common.job_status(job), result=job.result, completed_stages=completed_stages(job))


def object_ref(location: ObjectLocation) -> artifact_pb2.ObjectRef:
    return artifact_pb2.ObjectRef(bucket=location.bucket, key=location.key)
