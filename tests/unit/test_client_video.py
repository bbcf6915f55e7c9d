"""The Video client side without a genmesh server: ``video_request``, the sync and async clients and
``genmesh video`` against a fake VideoService in an in-process gRPC server, and the CLI's checks
that refuse a bad command line before anything is sent."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import typer
from typer.testing import CliRunner

from genmesh import cli
from genmesh.cli import video as cli_video
from genmesh.client import AsyncGenmeshClient, GenmeshClient
from genmesh.client.requests import SCHEDULERS, video_request
from genmesh.client.sync import VideoClient
from genmesh.common.v1 import artifact_pb2, diffusion_pb2, job_pb2, model_pb2
from genmesh.video.v1 import video_pb2, video_pb2_grpc

JOB_ID = "vid-0123456789ab"
VIDEO_BYTES = b"GIF89a fake video bytes"
PREFIX = f"20260101_1200/{JOB_ID}"
STAGES_BY_NAME = video_pb2.Stage.DESCRIPTOR.values_by_name


# --- video_request ------------------------------------------------------------------------------


def test_video_request_defaults_leave_optional_fields_unset() -> None:
    request = video_request("a cat")
    assert request.prompt == "a cat"
    assert request.model == request.motion_adapter == request.negative_prompt == ""
    for name in ("width", "height", "num_frames", "fps", "steps", "guidance_scale", "seed", "strength"):
        assert not request.HasField(name), name
    assert request.scheduler == diffusion_pb2.SCHEDULER_UNSPECIFIED
    assert request.output_format == video_pb2.VIDEO_FORMAT_GIF
    assert request.WhichOneof("init") is None
    assert not request.prompt_schedule
    assert not (request.return_inline or request.save_frames or request.detach)
    assert request.preview_interval_steps == 0


def test_video_request_sets_every_field() -> None:
    request = video_request(
        "a meadow",
        model="sd15",
        motion_adapter="mm-v3",
        negative_prompt="blurry",
        width=512,
        height=384,
        num_frames=24,
        fps=12,
        steps=20,
        guidance_scale=6.5,
        seed=0,
        scheduler="euler_a",
        output_format="mp4",
        return_inline=True,
        save_frames=True,
        preview_interval_steps=5,
        detach=True,
        init_image=b"png bytes",
        strength=0.7,
        prompt_schedule={0: "a sunny meadow", 16: "the meadow at night"},
    )
    assert (request.model, request.motion_adapter, request.negative_prompt) == ("sd15", "mm-v3", "blurry")
    assert (request.width, request.height, request.num_frames, request.fps, request.steps) == (512, 384, 24, 12, 20)
    assert request.guidance_scale == pytest.approx(6.5)
    assert request.HasField("seed") and request.seed == 0  # zero is a value, not "unset"
    assert request.scheduler == diffusion_pb2.SCHEDULER_EULER_ANCESTRAL
    assert request.output_format == video_pb2.VIDEO_FORMAT_MP4
    assert request.return_inline and request.save_frames and request.detach
    assert request.preview_interval_steps == 5
    assert request.WhichOneof("init") == "init_image_data" and request.init_image_data == b"png bytes"
    assert request.strength == pytest.approx(0.7)
    assert dict(request.prompt_schedule) == {0: "a sunny meadow", 16: "the meadow at night"}


@pytest.mark.parametrize(
    ("options", "field", "expected"),
    [
        ({"init_image_ref": ("outputs", "a/image.png")}, "init_image_ref", ("outputs", "a/image.png")),
        ({"init_video": b"gif bytes"}, "init_video_data", b"gif bytes"),
        ({"init_video_ref": ("uploads", "in.mp4")}, "init_video_ref", ("uploads", "in.mp4")),
    ],
)
def test_video_request_init_media(options: dict, field: str, expected: object) -> None:
    request = video_request("x", **options)
    assert request.WhichOneof("init") == field
    value = getattr(request, field)
    assert ((value.bucket, value.key) if isinstance(expected, tuple) else value) == expected


@pytest.mark.parametrize("fmt", ["gif", "mp4", "webp"])
def test_video_request_formats(fmt: str) -> None:
    assert (
        video_pb2.VideoFormat.Name(video_request("x", output_format=fmt).output_format) == f"VIDEO_FORMAT_{fmt.upper()}"
    )


def test_video_request_accepts_every_image_scheduler_name() -> None:
    for name, enum_name in SCHEDULERS.items():
        assert diffusion_pb2.Scheduler.Name(video_request("x", scheduler=name).scheduler) == enum_name


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"scheduler": "warp"}, ["scheduler", "'warp'", "ddim", "euler_a"]),
        ({"output_format": "avi"}, ["output_format", "'avi'", "gif", "mp4", "webp"]),
        ({"output_format": "png"}, ["output_format", "gif, mp4, webp"]),
        ({"init_image": b"a", "init_video": b"b"}, ["init_image", "init_video", "at most one"]),
        ({"init_image_ref": ("b", "k"), "init_video_ref": ("b", "k")}, ["init_image_ref", "init_video_ref"]),
    ],
)
def test_video_request_bad_options_raise_value_error(options: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        video_request("x", **options)
    for word in words:
        assert word in str(caught.value)


# --- a fake VideoService ------------------------------------------------------------------------


def artifact(key: str, data: bytes, content_type: str) -> artifact_pb2.Artifact:
    return artifact_pb2.Artifact(
        bucket="outputs", key=f"{PREFIX}/{key}", content_type=content_type, size_bytes=len(data), data=data
    )


def fake_result(request: video_pb2.GenerateVideoRequest) -> video_pb2.VideoResult:
    frames = request.num_frames if request.HasField("num_frames") else 16
    fps = request.fps if request.HasField("fps") else 8
    fmt = video_pb2.VideoFormat.Name(request.output_format or video_pb2.VIDEO_FORMAT_GIF)
    extension = fmt.removeprefix("VIDEO_FORMAT_").lower()
    inline = request.return_inline
    result = video_pb2.VideoResult(
        video=artifact(f"video.{extension}", VIDEO_BYTES if inline else b"", f"video/{extension}"),
        poster=artifact("poster.png", b"png" if inline else b"", "image/png"),
        num_frames=frames,
        fps=fps,
        duration_seconds=frames / fps,
        seed=request.seed if request.HasField("seed") else 1234,
    )
    if request.save_frames:
        result.frames.extend(artifact(f"frames/{i:04d}.png", b"png" if inline else b"", "image/png") for i in range(2))
    return result


class FakeVideoService(video_pb2_grpc.VideoServiceServicer):
    """Streams the documented event sequence; with ``hold`` it stops after the first progress
    update and waits until the client goes away (``cancelled`` is set when the call ends)."""

    def __init__(self) -> None:
        self.requests: list[video_pb2.GenerateVideoRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.calls: list[tuple[str, str]] = []
        self.hold = False
        self.holding = threading.Event()
        self.cancelled = threading.Event()

    def GenerateVideo(self, request, context) -> Iterator[video_pb2.GenerateVideoResponse]:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        if self.hold:  # a held call only ends when the client goes away (gRPC may stop iterating early)
            context.add_callback(self.cancelled.set)
        running = job_pb2.JOB_STATE_RUNNING

        def event(state: int = running, **fields) -> video_pb2.GenerateVideoResponse:
            return video_pb2.GenerateVideoResponse(job_id=JOB_ID, state=state, **fields)

        def progress(stage: int, step: int = 0, total: int = 0, eta: float = 0, **update) -> object:
            return event(
                progress_update=video_pb2.ProgressUpdate(stage=stage, **update),
                progress=job_pb2.Progress(step=step, total_steps=total, eta_seconds=eta),
            )

        yield event(job_pb2.JOB_STATE_QUEUED, queued=job_pb2.Queued(queue_position=0))
        yield event(started=job_pb2.Started())
        yield progress(video_pb2.STAGE_LOADING_MODEL)
        if self.hold:
            self.holding.set()
            while context.is_active():
                time.sleep(0.01)
            return
        if request.WhichOneof("init") and "STAGE_PREPARING_INPUT" in STAGES_BY_NAME:
            yield progress(video_pb2.Stage.Value("STAGE_PREPARING_INPUT"))
        for step in (1, 2):
            yield progress(video_pb2.STAGE_DENOISING, step, 2, eta=2.0 - step)
        yield progress(video_pb2.STAGE_DECODING, 2, 2, frames_decoded=0, total_frames=2)
        yield progress(video_pb2.STAGE_DECODING, 2, 2, frames_decoded=2, total_frames=2)
        yield progress(video_pb2.STAGE_ENCODING, 2, 2)
        yield progress(video_pb2.STAGE_SAVING, 2, 2)
        yield event(job_pb2.JOB_STATE_SUCCEEDED, result=fake_result(request))

    def ListModels(self, request, context) -> video_pb2.ListModelsResponse:
        return video_pb2.ListModelsResponse(
            models=[
                model_pb2.ModelInfo(name="sd15", is_default=True, labels={"kind": "base"}),
                model_pb2.ModelInfo(name="mm-v3", is_default=True, labels={"kind": "motion_adapter"}),
            ]
        )

    def _job(self, method: str, job_id: str, context) -> video_pb2.Job:
        self.calls.append((method, job_id))
        if job_id != JOB_ID:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id}")
        return video_pb2.Job(status=job_pb2.JobStatus(job_id=job_id, state=job_pb2.JOB_STATE_SUCCEEDED))

    def GetJob(self, request, context) -> video_pb2.Job:
        return self._job("get", request.job_id, context)

    def CancelJob(self, request, context) -> video_pb2.Job:
        return self._job("cancel", request.job_id, context)


@pytest.fixture
def service() -> Iterator[tuple[FakeVideoService, str]]:
    fake = FakeVideoService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    video_pb2_grpc.add_VideoServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


# --- the clients --------------------------------------------------------------------------------


def test_sync_client_streams_and_generates(service: tuple[FakeVideoService, str]) -> None:
    fake, url = service
    with GenmeshClient(url, api_key="secret") as client:
        assert isinstance(client.videos, VideoClient)
        events = list(client.videos.stream_generate("a cat", num_frames=4, fps=2, output_format="webp"))
        assert [e.WhichOneof("event") for e in events[:3]] == ["queued", "started", "progress_update"]
        assert {e.job_id for e in events} == {JOB_ID}
        result = client.videos.generate("a cat", num_frames=4, fps=2, return_inline=True, seed=7)
        assert (result.num_frames, result.fps, result.seed, result.video.data) == (4, 2, 7, VIDEO_BYTES)
        assert [m.name for m in client.videos.list_models()] == ["sd15", "mm-v3"]
        assert client.videos.get_job(JOB_ID).status.job_id == JOB_ID
        assert client.videos.cancel_job(JOB_ID).status.state == job_pb2.JOB_STATE_SUCCEEDED
    assert fake.requests[0] == video_request("a cat", num_frames=4, fps=2, output_format="webp")
    assert fake.metadata[0]["x-api-key"] == "secret"
    assert fake.calls == [("get", JOB_ID), ("cancel", JOB_ID)]


def test_sync_client_translates_errors(service: tuple[FakeVideoService, str]) -> None:
    from genmesh import errors

    _, url = service
    with GenmeshClient(url) as client, pytest.raises(errors.NotFound, match="no job vid-missing"):
        client.videos.get_job("vid-missing")


async def test_async_client_streams_and_generates(service: tuple[FakeVideoService, str]) -> None:
    fake, url = service
    async with AsyncGenmeshClient(url, api_key="secret") as client:
        kinds = [e.WhichOneof("event") async for e in client.videos.stream_generate("a cat", init_video=b"gif")]
        assert kinds[0] == "queued" and kinds[-1] == "result"
        result = await client.videos.generate("a cat", num_frames=6, fps=3, return_inline=True)
        assert (result.num_frames, result.fps, result.duration_seconds) == (6, 3, 2.0)
        assert [m.labels["kind"] for m in await client.videos.list_models()] == ["base", "motion_adapter"]
        assert (await client.videos.get_job(JOB_ID)).status.job_id == JOB_ID
        assert (await client.videos.cancel_job(JOB_ID)).status.job_id == JOB_ID
    assert fake.requests[0].init_video_data == b"gif"
    assert fake.metadata[0]["x-api-key"] == "secret"


# --- the CLI: checks before anything is sent ----------------------------------------------------

runner = CliRunner()


class NoClient:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the command connected although its command line was bad")


def one_line_error(result, *words: str) -> None:
    """Exit 2 with exactly one line on stderr naming ``words``, nothing on stdout, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""


@pytest.fixture
def no_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_video, "GenmeshClient", NoClient)


@pytest.mark.usefixtures("no_send")
@pytest.mark.parametrize("name", ["clip.avi", "clip", "clip.png", "clip.mp4.tmp"])
def test_cli_refuses_other_extensions(tmp_path: Path, name: str) -> None:
    result = runner.invoke(cli.app, ["video", "a cat", "-o", str(tmp_path / name)])
    one_line_error(result, "--output", ".gif", ".mp4", ".webp", name)


@pytest.mark.usefixtures("no_send")
def test_cli_accepts_uppercase_extension_but_checks_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "deeper"
    result = runner.invoke(cli.app, ["video", "a cat", "-o", str(missing / "CLIP.MP4")])
    one_line_error(result, "--output", "does not exist", str(missing))


@pytest.mark.usefixtures("no_send")
def test_cli_refuses_a_folder_as_output(tmp_path: Path) -> None:
    folder = tmp_path / "out.gif"
    folder.mkdir()
    one_line_error(runner.invoke(cli.app, ["video", "a cat", "-o", str(folder)]), "--output", "folder")


@pytest.mark.usefixtures("no_send")
@pytest.mark.parametrize("option", ["--init-image", "--init-video"])
def test_cli_missing_or_unreadable_init_media(tmp_path: Path, option: str) -> None:
    out = str(tmp_path / "clip.mp4")
    missing = tmp_path / "missing.png"
    one_line_error(runner.invoke(cli.app, ["video", "x", "-o", out, option, str(missing)]), option, str(missing))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    one_line_error(runner.invoke(cli.app, ["video", "x", "-o", out, option, str(folder)]), option, "cannot read")


@pytest.mark.usefixtures("no_send")
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--prompt-at", "sixteen=night"], ["--prompt-at", "FRAME=PROMPT", "sixteen=night"]),
        (["--prompt-at", "16"], ["--prompt-at", "FRAME=PROMPT"]),
        (["--prompt-at", "16="], ["--prompt-at", "FRAME=PROMPT"]),
        (["--prompt-at", "-1=night"], ["--prompt-at"]),
        (["--prompt-at", "4=a", "--prompt-at", "4=b"], ["--prompt-at", "frame 4", "more than once"]),
        (["--scheduler", "warp"], ["--scheduler", "ddim", "'warp'"]),
        (["--strength", "0.5"], ["--strength", "--init-image", "--init-video"]),
        (["--init-image", "a.png", "--init-video", "b.gif"], ["--init-image", "--init-video", "not both"]),
        (["--init-image", "s3://outputs"], ["--init-image", "s3://BUCKET/KEY"]),
    ],
)
def test_cli_other_bad_options(tmp_path: Path, args: list[str], words: list[str]) -> None:
    one_line_error(runner.invoke(cli.app, ["video", "x", "-o", str(tmp_path / "clip.gif"), *args]), *words)


# --- the CLI against the fake service ------------------------------------------------------------


def test_cli_writes_the_video_and_prints_a_summary(tmp_path: Path, service: tuple[FakeVideoService, str]) -> None:
    fake, url = service
    still = tmp_path / "portrait.png"
    still.write_bytes(b"portrait png")
    output = tmp_path / "clip.mp4"
    args = ["video", "a cat", "-o", str(output), "--frames", "4", "--fps", "2", "--init-image", str(still)]
    args += ["--strength", "0.8", "--seed", "42", "--guidance", "5", "--scheduler", "euler_a", "--steps", "2"]
    args += ["--prompt-at", "2=a dog", "--prompt-at", "0 = a cat, sitting", "--save-frames", "--url", url]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert output.read_bytes() == VIDEO_BYTES
    request = fake.requests[0]
    assert request.output_format == video_pb2.VIDEO_FORMAT_MP4 and request.return_inline and request.save_frames
    assert request.init_image_data == b"portrait png" and request.strength == pytest.approx(0.8)
    assert (request.num_frames, request.fps, request.seed, request.steps) == (4, 2, 42, 2)
    assert request.scheduler == diffusion_pb2.SCHEDULER_EULER_ANCESTRAL
    assert dict(request.prompt_schedule) == {0: "a cat, sitting", 2: "a dog"}
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"2 frames stored as PNG under s3://outputs/{PREFIX}/frames/"
    assert lines[-1] == f"{output}  4 frames  2 fps  2.00 s  seed 42  s3://outputs/{PREFIX}/video.mp4"
    assert len(lines) == 2 and result.stderr.strip() == f"job {JOB_ID}"  # the job id beside the progress


def test_cli_init_image_from_storage(tmp_path: Path, service: tuple[FakeVideoService, str]) -> None:
    fake, url = service
    args = ["video", "x", "-o", str(tmp_path / "c.webp"), "--init-image", f"s3://outputs/{PREFIX}/image.png"]
    result = runner.invoke(cli.app, [*args, "--url", url])
    assert result.exit_code == 0, result.output
    ref = fake.requests[0].init_image_ref
    assert (ref.bucket, ref.key) == ("outputs", f"{PREFIX}/image.png")
    assert fake.requests[0].output_format == video_pb2.VIDEO_FORMAT_WEBP


def test_cli_json_lines_carry_no_inline_bytes(tmp_path: Path, service: tuple[FakeVideoService, str]) -> None:
    _, url = service
    output = tmp_path / "clip.gif"
    result = runner.invoke(cli.app, ["video", "x", "-o", str(output), "--json", "--url", url])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["job_id"] == JOB_ID and "queued" in events[0]
    final = events[-1]["result"]
    assert "data" not in final["video"] and final["video"]["key"].endswith("video.gif")
    assert output.read_bytes() == VIDEO_BYTES


def run_until_interrupted(tmp_path: Path, url: str, fake: FakeVideoService):
    output = tmp_path / "c.gif"
    result = runner.invoke(cli.app, ["video", "x", "-o", str(output), "--url", url])
    assert result.exit_code == 130, (result.output, result.exception)
    assert result.stdout.strip() == ""
    assert result.stderr.strip().splitlines() == [f"job {JOB_ID}", f"cancelled job {JOB_ID}"]
    assert fake.cancelled.wait(5), "the server never saw the stream end"
    assert not output.exists()


def test_cli_ctrl_c_while_handling_an_event_cancels_the_stream(
    tmp_path: Path, service: tuple[FakeVideoService, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = service
    fake.hold = True

    def interrupt(event: object) -> str:
        raise KeyboardInterrupt  # Ctrl-C while the CLI handles the first progress update

    monkeypatch.setattr(cli_video, "video_progress_text", interrupt)
    run_until_interrupted(tmp_path, url, fake)


def test_cli_ctrl_c_while_waiting_for_events_cancels_the_stream(
    tmp_path: Path, service: tuple[FakeVideoService, str]
) -> None:
    """A real SIGINT while the CLI waits in gRPC for the next event (the server holds the job)."""
    fake, url = service
    fake.hold = True

    def press_ctrl_c() -> None:
        if fake.holding.wait(10):
            time.sleep(0.2)  # the client is now blocked waiting for the next event
            os.kill(os.getpid(), signal.SIGINT)

    # SIGINT as a terminal delivers it (a suite started in the background runs with it ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    try:
        run_until_interrupted(tmp_path, url, fake)
    finally:
        presser.join(15)
        signal.signal(signal.SIGINT, previous)


def test_cli_server_error_is_one_line(tmp_path: Path) -> None:
    """Nothing listens on port 1: the gRPC error is one line (exit 1), not a traceback."""
    result = runner.invoke(cli.app, ["video", "x", "-o", str(tmp_path / "c.gif"), "--url", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: UNAVAILABLE") and len(result.stderr.strip().splitlines()) == 1


# --- the CLI's helpers --------------------------------------------------------------------------


def progress_event(stage: int, step: int = 0, total: int = 0, eta: float = 0, **update: int):
    return video_pb2.GenerateVideoResponse(
        progress_update=video_pb2.ProgressUpdate(stage=stage, **update),
        progress=job_pb2.Progress(step=step, total_steps=total, eta_seconds=eta),
    )


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (progress_event(video_pb2.STAGE_LOADING_MODEL), "loading model"),
        (progress_event(video_pb2.STAGE_DENOISING, 5, 25, eta=72.4), "denoising step 5/25  ETA 1:12"),
        (progress_event(video_pb2.STAGE_DENOISING, 25, 25), "denoising step 25/25"),
        (
            progress_event(video_pb2.STAGE_DECODING, 25, 25, eta=3, frames_decoded=8, total_frames=16),
            "decoding frames 8/16  ETA 0:03",
        ),
        (progress_event(video_pb2.STAGE_ENCODING, eta=1), "encoding"),
        (progress_event(video_pb2.STAGE_SAVING), "saving"),
    ],
)
def test_progress_text(event: video_pb2.GenerateVideoResponse, text: str) -> None:
    assert cli.video_progress_text(event) == text


def test_progress_text_for_stages_this_proto_may_lack() -> None:
    if "STAGE_PREPARING_INPUT" in STAGES_BY_NAME:
        stage = video_pb2.Stage.Value("STAGE_PREPARING_INPUT")
        assert cli.video_progress_text(progress_event(stage)) == "preparing input"
    assert cli.video_progress_text(progress_event(99)) == "working"  # a stage from a newer server


def test_job_commands_route_by_id_prefix() -> None:
    client = GenmeshClient("127.0.0.1:1")  # never connects: only picks the service client
    try:
        assert cli.job_service(client, "vid-1") is client.videos
        assert cli.job_service(client, "img-1") is client.images
        assert cli.job_service(client, "txt-1") is client.text
        assert cli.job_service(client, "trn-1") is client.training
        with pytest.raises(typer.Exit) as caught:
            cli.job_service(client, "other-1")
        assert caught.value.exit_code == 2
    finally:
        client.close()


def test_job_get_and_cancel_reach_the_video_service(service: tuple[FakeVideoService, str]) -> None:
    fake, url = service
    got = runner.invoke(cli.app, ["job", "get", JOB_ID, "--url", url])
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["status"]["job_id"] == JOB_ID
    assert runner.invoke(cli.app, ["job", "cancel", JOB_ID, "--url", url]).exit_code == 0
    assert fake.calls == [("get", JOB_ID), ("cancel", JOB_ID)]
