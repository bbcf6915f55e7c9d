"""The CLI's shared pieces: errors name the flag the user typed, the key hint names the keys file in
use, progress never shows a total before it is known, `job cancel` reads any service's state, and
character.json keeps every field of the sheet."""

from __future__ import annotations

import json
import os

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from genmesh import errors
from genmesh.agent.v1 import agent_pb2
from genmesh.cli import app, video_progress_text
from genmesh.cli.character import character_progress_text, write_files
from genmesh.cli.common import counted, fail, flag_for, key_hint, progress_bar
from genmesh.cli.jobs import TERMINAL_STATES, job_state
from genmesh.common.v1 import job_pb2
from genmesh.text.v1 import text_pb2
from genmesh.training.v1 import training_pb2
from genmesh.video.v1 import video_pb2

COMMANDS = get_command(app).commands  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("command", "field", "flag"),
    [
        ("video", "num_frames", "--frames"),
        ("video", "guidance_scale", "--guidance-scale"),
        ("image", "guidance_scale", "--guidance-scale"),
        ("image", "mask_image", "--mask"),
        ("character", "video.num_frames", "--frames"),
        ("character", "image.width", "--width"),
        ("character", "sheet.appearance_prompt", "--sheet"),  # a field inside the --sheet file
        ("synthetic-data", "degradation_type", "--preset"),
        ("synthetic-data", "content_kinds[1]", "--kind"),
        ("train", "spec.num_epochs", "--epochs"),
        ("text", "sampling.max_tokens", "--max-tokens"),
        ("restore", "model_id", "MODEL"),
        ("restore", "tile_size", "--tile-size"),
        ("chat", "notify_url", "--notify-url"),
        ("train", "notify_url", "--notify-url"),
        ("video", "not_a_field", None),
        ("video", None, None),
    ],
)
def test_an_api_field_names_the_flag_of_the_command(command: str, field: str | None, flag: str | None) -> None:
    assert flag_for(field, COMMANDS[command]) == flag


def test_a_failed_call_names_the_flag_beside_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    error = errors.InvalidArgument("num_frames must be between 2 and 64 (got 100)", field="num_frames")
    with typer.Context(COMMANDS["video"]), pytest.raises(typer.Exit) as raised:
        fail(error)
    assert raised.value.exit_code == 2
    assert (
        capsys.readouterr().err == "error: INVALID_ARGUMENT: --frames: num_frames must be between 2 and 64 (got 100)\n"
    )


def test_a_message_led_by_its_field_names_the_flag_once(capsys: pytest.CaptureFixture[str]) -> None:
    error = errors.NotFound("model: unknown model 'nope'; available: tiny-sd15", field="model")
    with typer.Context(COMMANDS["image"]), pytest.raises(typer.Exit):
        fail(error)
    assert capsys.readouterr().err == "error: NOT_FOUND: --model: unknown model 'nope'; available: tiny-sd15\n"


def test_connection_options_before_the_command_apply_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENMESH_URL", "127.0.0.1:1")
    monkeypatch.setenv("GENMESH_API_KEY", "from-env")
    done = CliRunner().invoke(app, ["--url", "127.0.0.1:7", "--api-key", "given", "text", "--help"])
    assert done.exit_code == 0, done.output
    assert os.environ["GENMESH_URL"] == "127.0.0.1:7" and os.environ["GENMESH_API_KEY"] == "given"


def test_the_key_hint_names_the_keys_file_in_use(tmp_path) -> None:
    assert f"{tmp_path}/api-keys" in key_hint({"GENMESH_DATA_DIR": str(tmp_path)})
    assert "/etc/genmesh/keys" in key_hint({"GENMESH_API_KEYS_FILE": "/etc/genmesh/keys"})
    assert ".local/share/genmesh/api-keys" in key_hint({})


def test_progress_waits_for_its_totals() -> None:
    assert counted("denoising step", 0, 0) == "denoising step"
    assert counted("denoising step", 3, 25) == "denoising step 3/25"
    waiting = video_pb2.GenerateVideoResponse(progress_update=video_pb2.ProgressUpdate(stage=video_pb2.STAGE_DENOISING))
    assert video_progress_text(waiting) == "denoising step"
    stage = agent_pb2.CreateCharacterResponse(
        stage_progress=agent_pb2.StageProgress(stage=agent_pb2.STAGE_IMAGE, sub_stage="STAGE_DENOISING")
    )
    assert character_progress_text(stage) == "image: denoising"
    stage.stage_progress.sub_progress.step, stage.stage_progress.sub_progress.total_steps = 2, 20
    assert character_progress_text(stage) == "image: denoising 2/20"
    bar = progress_bar(disable=True)
    task = bar.add_task("queued", total=None)
    count = bar.columns[2]
    assert str(count.render(bar.tasks[task])) == "waiting"  # not "0/None"
    bar.update(task, total=8, completed=3)
    assert str(count.render(bar.tasks[task])) == "3/8"


def test_job_state_reads_every_kind_of_job() -> None:
    task = text_pb2.Job(status=job_pb2.JobStatus(state=job_pb2.JOB_STATE_RUNNING))
    training = training_pb2.TrainingJob(state=job_pb2.JOB_STATE_CANCELLED)
    assert job_state(task) not in TERMINAL_STATES and job_state(training) in TERMINAL_STATES


def test_character_json_keeps_the_empty_fields_of_the_sheet(tmp_path) -> None:
    sheet = agent_pb2.CharacterSheet(name="Ilya", appearance_prompt="an elf", motion_prompt="waves")
    written = write_files(tmp_path, sheet, [])
    assert [path.name for path in written] == ["character.json"]
    fields = json.loads(written[0].read_text(encoding="utf-8"))
    assert list(fields) == [field.name for field in agent_pb2.CharacterSheet.DESCRIPTOR.fields]
    assert fields["negative_prompt"] == "" and fields["name"] == "Ilya"
