"""The layer Image and Video share: one servicer's messages, one request conversion, one settings
declaration read under each service's own GENMESH_<SERVICE>_* names, one table of output formats."""

from __future__ import annotations

import dataclasses

import pytest

from genmesh.common.v1 import job_pb2
from genmesh.errors import InvalidArgument
from genmesh.image.v1 import image_pb2
from genmesh.video.v1 import video_pb2
from servers.image.servicer import ImageServicer
from servers.image.settings import ImageSettings
from servers.media.formats import ImageFormat, VideoFormat
from servers.runtime import events
from servers.runtime.queue import Job
from servers.runtime.settings import ServerSettings, parse_settings, setting
from servers.video.convert import generate_video_request
from servers.video.servicer import VideoServicer
from servers.video.settings import VideoSettings


def running_job() -> Job:
    return Job("vid-0-1", "GenerateVideo", False, lambda context: None, state=events.JobState.RUNNING)


def test_each_servicer_declares_its_generate_rpc_and_gets_its_own_messages() -> None:
    assert (ImageServicer.protos, ImageServicer.response) == (image_pb2, image_pb2.GenerateImageResponse)
    assert (VideoServicer.protos, VideoServicer.response) == (video_pb2, video_pb2.GenerateVideoResponse)
    assert ImageServicer.GenerateImage.method == "GenerateImage"
    assert VideoServicer.GenerateVideo.method == "GenerateVideo"


def test_stage_updates_carry_frame_counts_only_where_the_stage_counts_frames() -> None:
    servicer = VideoServicer.__new__(VideoServicer)  # the messages need no engine, queue or store
    job = running_job()
    decoding = servicer.watch_message(job, events.Output(events.StageChanged("decoding", 3, 16)))
    assert decoding.progress_update == video_pb2.ProgressUpdate(
        stage=video_pb2.STAGE_DECODING, frames_decoded=3, total_frames=16
    )
    step = servicer.watch_message(
        job, events.ProgressEvent(events.Progress(step=2, total_steps=8, elapsed_seconds=0.5, eta_seconds=1.5))
    )
    assert step.progress_update.stage == video_pb2.STAGE_DENOISING and step.progress.step == 2
    image = ImageServicer.__new__(ImageServicer)
    saving = image.watch_message(job, events.Output(events.StageChanged("saving")))
    assert saving.progress_update == image_pb2.ProgressUpdate(stage=image_pb2.STAGE_SAVING)
    done = image.watch_message(job, events.Succeeded(image_pb2.ImageResult()))
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED and done.HasField("result")


def test_an_init_media_reference_is_checked_and_named_by_its_field() -> None:
    with pytest.raises(InvalidArgument) as refused:
        generate_video_request(video_pb2.GenerateVideoRequest(prompt="a", init_video_ref={"bucket": "", "key": "k"}))
    assert refused.value.field == "init_video_ref.bucket"
    with pytest.raises(InvalidArgument) as empty:
        generate_video_request(video_pb2.GenerateVideoRequest(prompt="a", init_image_data=b""))
    assert empty.value.field == "init_image_data"
    parsed = generate_video_request(
        video_pb2.GenerateVideoRequest(prompt="a", init_video_ref={"bucket": "outputs", "key": "a/b.mp4"})
    )
    assert parsed.init_video_ref is not None and parsed.init_video_ref.key == "a/b.mp4"
    assert parsed.init_image_data is None and parsed.init_image_ref is None and parsed.init_video_data is None


def test_shared_diffusion_settings_are_read_under_each_services_name() -> None:
    environ = {"GENMESH_IMAGE_KEEP_ALIVE_SECONDS": "5", "GENMESH_VIDEO_KEEP_ALIVE_SECONDS": "7",
               "GENMESH_IMAGE_MODEL": "sdxl", "GENMESH_VIDEO_MAX_PIXELS": "1024"}  # fmt: skip
    image = parse_settings(ImageSettings, [], environ)
    video = parse_settings(VideoSettings, [], environ)
    assert (image.keep_alive_seconds, image.model, image.max_pixels) == (5.0, "sdxl", 4 * 1024 * 1024)
    assert (video.keep_alive_seconds, video.model, video.max_pixels) == (7.0, "", 1024)


def test_a_scoped_setting_needs_a_service_name() -> None:
    @dataclasses.dataclass(frozen=True)
    class Nameless(ServerSettings):
        model: str = setting("", "a model", scoped=True)

    with pytest.raises(TypeError, match="model: a service-scoped setting"):
        parse_settings(Nameless, [], {})


def test_each_output_format_knows_its_content_type_and_extension() -> None:
    assert [(f.value, f.content_type, f.extension) for f in ImageFormat] == [
        ("png", "image/png", "png"), ("webp", "image/webp", "webp"), ("jpeg", "image/jpeg", "jpg")]  # fmt: skip
    assert VideoFormat("mp4").content_type == "video/mp4" and VideoFormat.GIF == "gif"


def test_models_say_where_they_stand_by_one_rule_and_video_loads_on_first_use(tmp_path) -> None:
    """A Video server that has not loaded its default pair (preload off, or unloaded after its
    keep-alive) lists it as the default that "loads on first use" until a job loads it; the rule is
    the one Text and Image list by."""
    from genmesh.common.v1 import model_pb2
    from servers.diffusion.catalog import MOTION_ADAPTERS, ModelCatalog
    from servers.runtime.convert import model_state
    from servers.video.engine import ModelPair, VideoEngine

    assert model_state(True, "local") == model_state(True, "store") == model_pb2.MODEL_STATE_LOADED
    assert model_state(False, "local") == model_pb2.MODEL_STATE_LOADS_ON_FIRST_USE
    assert model_state(False, "store") == model_pb2.MODEL_STATE_NOT_DOWNLOADED
    engine = VideoEngine(
        ModelCatalog(tmp_path / "models"), ModelCatalog(tmp_path / "motion", kind=MOTION_ADAPTERS),
        cache_dir=tmp_path, device="cpu",
    )  # fmt: skip
    servicer = object.__new__(VideoServicer)  # ListModels reads the engine alone
    servicer.engine = engine
    before = {model.name: model for model in servicer.model_infos()}
    assert before and all(model.state == model_pb2.MODEL_STATE_LOADS_ON_FIRST_USE for model in before.values())
    assert before["tiny-sd15"].is_default and before["tiny-motion-adapter"].is_default
    engine.models._key, engine.models._model = (
        ModelPair("tiny-sd15", "tiny-motion-adapter"),
        object(),
    )  # a job loaded them
    after = {model.name: model for model in servicer.model_infos()}
    assert after["tiny-sd15"].state == after["tiny-motion-adapter"].state == model_pb2.MODEL_STATE_LOADED
    assert after["tiny-sd15"].loaded
