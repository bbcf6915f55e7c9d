"""One CreateCharacter job as a use case: services checked and inputs resolved before queueing, then
(on a worker thread) text -> image -> video as sub-jobs on those services, each stage's result copied
into the agent job's folder as it finishes. The job's record (written by the queue) names every
sub-job, and each sub-job's own record holds what it ran with. The servicer only converts and submits."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genmesh.agent.v1 import agent_pb2
from genmesh.client import requests
from genmesh.errors import InvalidArgument, NotFound, Unavailable
from genmesh.text.v1 import text_pb2
from servers.agent import convert
from servers.agent.eta import CostModel, ProgressPlan, work_units
from servers.agent.types import (
    SHEET_LIMITS,
    SHEET_SCHEMA,
    CharacterRequest,
    CharacterSheet,
    StageDone,
    StageProgress,
    StageStarted,
)
from servers.agent.upstreams import Upstreams
from servers.runtime import caller
from servers.runtime import convert as common
from servers.runtime.job_records import record_object
from servers.runtime.queue import JobContext
from storage import outputs
from storage.buckets import OUTPUTS
from storage.object_store import ObjectLocation, ObjectStore, StoredObject

SHEET_PROMPT = """Invent a character from this idea: {idea}
{style}Answer with a character sheet as JSON with these fields:
- name: the character's name
- biography: a short biography, two or three sentences
- personality: a few personality traits
- appearance_prompt: a prompt for an image model that paints the character's portrait: face, hair, clothes, \
setting, lighting, as comma-separated phrases
- negative_prompt: what the portrait should avoid, as comma-separated phrases (e.g. blurry, deformed hands)
- motion_prompt: a short prompt for a video model that animates the portrait (how the character moves)"""


@dataclass
class _Run:
    """What a running job has made so far."""

    prefix: str
    sheet: CharacterSheet | None = None
    sheet_stored: StoredObject | None = None
    portrait: ObjectLocation | None = None
    portrait_stored: StoredObject | None = None
    video_stored: StoredObject | None = None
    sheet_tokens: int = 0  # what the text stage's sheet took
    stages: list[StageDone] = field(default_factory=list)


@dataclass(frozen=True)
class CharacterJob:
    request: CharacterRequest
    upstreams: Upstreams
    store: ObjectStore
    costs: CostModel
    metadata: tuple[tuple[str, str], ...]  # x-request-id / x-client-id, passed to every sub-job
    seed: int
    plan: ProgressPlan
    keep_alive_seconds: int | None = None

    @classmethod
    def prepare(
        cls,
        request: CharacterRequest,
        upstreams: Upstreams,
        store: ObjectStore,
        costs: CostModel,
        metadata: Sequence[tuple[str, str]],
        keep_alive_seconds: int | None = None,
    ) -> CharacterJob:
        """Before anything is queued: every service the stages need is configured and the first one
        answers (UNAVAILABLE naming it), and the portrait to start from exists (NOT_FOUND). Later stages'
        services are asked again as their stage starts: one restarting now may be back by then, and one
        still down fails its stage with the earlier stages' results kept."""
        upstreams.require_configured(request.stages)
        upstreams.require_serving(request.stages[0])
        check_model_names(request, upstreams, metadata)
        if request.portrait_ref is not None:
            location = request.portrait_ref
            if not store.exists(location.bucket, location.key):
                raise NotFound(
                    f"portrait_ref: no object {location.key!r} in bucket {location.bucket!r}", field="portrait_ref"
                )
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        return cls(request, upstreams, store, costs, tuple(metadata), seed, costs.plan(request), keep_alive_seconds)

    # -- the use case -------------------------------------------------------------------------------------

    def run(self, context: JobContext) -> agent_pb2.CharacterResult:
        started = time.monotonic()
        request = self.request
        run = _Run(outputs.job_prefix(context.job_id), sheet=request.sheet)
        if request.portrait_ref is not None:
            run.portrait = request.portrait_ref
        for stage in request.stages:
            context.check_cancelled()
            stage_started = time.monotonic()
            done = getattr(self, f"_{stage}")(context, run)
            seconds = time.monotonic() - stage_started
            if stage == "text":
                self.costs.observe_text(request.text.max_tokens, run.sheet_tokens, seconds)
            else:
                self.costs.observe(stage, work_units(request, stage), seconds)
            done = StageDone(done.stage, done.sub_job_id, done.stored, seconds, done.sheet)
            run.stages.append(done)
            later = self.costs.seconds_after(request, stage)
            context.output(done, self.plan.step(stage, 1.0), self.plan.total, eta_seconds=later)
        if run.sheet is not None and run.sheet_stored is None:  # the caller's own sheet, stored with the rest
            run.sheet_stored = self._put_sheet(run)
        return self._result(context, run, time.monotonic() - started)

    def _text(self, context: JobContext, run: _Run) -> StageDone:
        request, options = self.request, self.request.text
        style = f"Visual style: {request.style}\n" if request.style else ""
        message = requests.chat_request(
            [{"role": "user", "content": SHEET_PROMPT.format(idea=request.idea.strip(), style=style)}],
            model=options.model,
            json_schema=SHEET_SCHEMA,
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            seed=options.seed if options.seed is not None else self.seed,
        )
        self._keep_alive(message)
        result, sub_job_id = self._sub_job(context, "text", "Chat", message)
        run.sheet = _parse_sheet(result)
        run.sheet_tokens = result.usage.completion_tokens
        run.sheet_stored = self._put_sheet(run)
        return StageDone("text", sub_job_id, run.sheet_stored, 0.0, run.sheet)

    def _image(self, context: JobContext, run: _Run) -> StageDone:
        request, options = self.request, self.request.image
        assert run.sheet is not None  # convert.py: the image stage starts from the text stage or a sheet
        prompt = run.sheet.appearance_prompt.strip()
        if request.style:
            prompt = f"{prompt}, {request.style.strip()}"
        message = requests.image_request(
            prompt,
            model=options.model,
            negative_prompt=run.sheet.negative_prompt,
            width=options.width,
            height=options.height,
            steps=options.steps or request.steps,
            guidance_scale=options.guidance_scale,
            seed=options.seed if options.seed is not None else self.seed,
            scheduler=options.scheduler,
            loras=[(lora.name, lora.weight) for lora in options.loras],
        )
        self._keep_alive(message)
        result, sub_job_id = self._sub_job(context, "image", "GenerateImage", message)
        artifact = result.images[0].artifact
        run.portrait_stored = self._copy(artifact.bucket, artifact.key, f"{run.prefix}portrait.png", "image/png")
        run.portrait = ObjectLocation(run.portrait_stored.bucket, run.portrait_stored.key)
        return StageDone("image", sub_job_id, run.portrait_stored, 0.0)

    def _video(self, context: JobContext, run: _Run) -> StageDone:
        request, options = self.request, self.request.video
        assert run.portrait is not None  # convert.py: the video stage starts from the image stage or a ref
        motion = run.sheet.motion_prompt.strip() if run.sheet is not None else ""
        message = requests.video_request(
            motion or request.idea.strip(),
            model=options.model,
            motion_adapter=options.motion_adapter,
            negative_prompt=run.sheet.negative_prompt if run.sheet is not None else "",
            num_frames=options.num_frames,
            fps=options.fps,
            steps=options.steps or request.steps,
            seed=options.seed if options.seed is not None else self.seed,
            output_format=options.output_format,
            strength=options.strength,
            init_image_ref=(run.portrait.bucket, run.portrait.key),
            loras=[(lora.name, lora.weight) for lora in options.loras],
        )
        self._keep_alive(message)
        result, sub_job_id = self._sub_job(context, "video", "GenerateVideo", message)
        video = result.video
        extension = video.key.rsplit(".", 1)[-1]
        run.video_stored = self._copy(video.bucket, video.key, f"{run.prefix}video.{extension}", video.content_type)
        return StageDone("video", sub_job_id, run.video_stored, 0.0)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _sub_job(self, context: JobContext, stage: str, method: str, message: Any) -> tuple[Any, str]:
        """Run the stage's sub-job, streaming its start and progress; (result, sub-job id)."""
        plan = self.plan
        ids: list[str] = []
        started = time.monotonic()
        later = self.costs.seconds_after(self.request, stage)

        def eta(fraction: float) -> float:
            """This stage's pace over what is left of it, then the later stages' expected seconds."""
            if fraction <= 0:
                return self.costs.expected_seconds(stage, self.costs.units(self.request, stage)) + later
            return (time.monotonic() - started) / fraction * (1 - fraction) + later

        def on_event(event: Any) -> None:
            if not ids:
                ids.append(event.job_id)
                started_payload = StageStarted(stage, event.job_id, stage)
                context.output(started_payload, plan.step(stage, 0.0), plan.total, eta_seconds=eta(0))
            if event.HasField("progress") and event.WhichOneof("event") not in ("result", "error", "cancelled"):
                sub_stage = ""
                if event.WhichOneof("event") == "progress_update":
                    update = event.progress_update
                    stages = update.DESCRIPTOR.fields_by_name["stage"].enum_type.values_by_number
                    sub_stage = stages[update.stage].name if update.stage in stages else ""
                payload = StageProgress(stage, event.job_id, event.progress, sub_stage)
                fraction = event.progress.fraction
                if stage == "text":  # measured against max_tokens: a sheet takes only part of them
                    fraction = self.costs.text_fraction(self.request, event.progress.step)
                context.output(payload, plan.step(stage, fraction), plan.total, eta_seconds=eta(fraction))

        try:
            self.upstreams.require_serving(stage)
        except Unavailable as exc:
            raise Unavailable(f"the {stage} stage failed: {exc.message}") from None
        # The sub-job records its parent, so the library lists the character alone.
        metadata = (*self.metadata, (caller.PARENT_JOB_HEADER, context.job_id))
        result = self.upstreams.stream(stage, method, message, metadata, context, on_event)
        return result, ids[0] if ids else ""

    def _keep_alive(self, message: Any) -> None:
        if self.keep_alive_seconds is not None:
            message.keep_alive_seconds = self.keep_alive_seconds

    def _copy(self, bucket: str, key: str, target: str, content_type: str) -> StoredObject:
        """A sub-job's stored result, copied into the agent job's folder."""
        return self.store.put_bytes(OUTPUTS, target, self.store.get_bytes(bucket, key), content_type)

    def _put_sheet(self, run: _Run) -> StoredObject:
        assert run.sheet is not None
        data = json.dumps(run.sheet.as_dict(), ensure_ascii=False, indent=2).encode()
        return self.store.put_bytes(OUTPUTS, f"{run.prefix}character.json", data, "application/json")

    def _result(self, context: JobContext, run: _Run, seconds: float) -> agent_pb2.CharacterResult:
        request = self.request
        parameters = agent_pb2.CharacterParameters(
            seed=self.seed,
            steps=request.steps or 0,
            stages=[convert.stage_enum(stage) for stage in request.stages],
            style=request.style,
            idea=request.idea,
        )
        return agent_pb2.CharacterResult(
            sheet=convert.sheet_message(run.sheet),
            sheet_artifact=common.artifact(run.sheet_stored),
            portrait=common.artifact(run.portrait_stored),
            video=common.artifact(run.video_stored),
            stages=[convert.stage_result(done) for done in run.stages],
            parameters=parameters,
            record=common.artifact(record_object(self.store, context.job_id)),
            total_seconds=seconds,
        )


# The names each stage's options may give, as (field, kind in the service's ListModels, what it is).
_NAMED = {
    "text": (("model", "base", "model"),),
    "image": (("model", "base", "model"),),
    "video": (("model", "base", "model"), ("motion_adapter", "motion_adapter", "motion adapter")),
}


def check_model_names(request: CharacterRequest, upstreams: Upstreams, metadata: Sequence[tuple[str, str]]) -> None:
    """Models and motion adapters named in the stage options exist on their services (``NotFound``
    naming the field and the known names), before anything is queued. A service that does not answer
    now is skipped: its stage asks again when it starts."""
    for stage in request.stages:
        options = getattr(request, stage)
        wanted = [(name, kind, what) for name, kind, what in _NAMED[stage] if getattr(options, name)]
        listed = upstreams.model_names(stage, metadata) if wanted else None
        for name, kind, what in wanted if listed is not None else ():
            value, known = getattr(options, name), listed.get(kind, [])
            if value not in known:
                field = f"{stage}.{name}"
                raise NotFound(f"{field}: unknown {what} {value!r}; available: {', '.join(known)}", field=field)


def _parse_sheet(result: text_pb2.TextResult) -> CharacterSheet:
    """The text stage's JSON as a sheet, whitespace collapsed. The Text service enforces the schema with a
    grammar, so only a sheet cut short by max_tokens should fail here."""
    try:
        data = json.loads(result.text)
        sheet = CharacterSheet(**{name: " ".join(str(data[name]).split()) for name in SHEET_LIMITS})
    except (ValueError, KeyError, TypeError):
        cut = result.finish_reason == text_pb2.FINISH_REASON_LENGTH
        reason = "was cut short by max_tokens; raise it" if cut else "is not the JSON the schema asks for"
        raise InvalidArgument(
            f"the text stage failed: the character sheet {reason} ({len(result.text)} characters written)",
            field="text.max_tokens" if cut else None,
        ) from None
    return sheet
