"""The `genmesh` CLI against the shared mesh, as a user runs it: each job's command names its job at
once, Ctrl-C (a real SIGINT, sent once the job was named) cancels it alike for every command, a
cancelled character keeps what its finished stages made, and `job cancel` prints the stopped job."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from genmesh.client import GenmeshClient
from genmesh.common.v1 import job_pb2
from servers.mesh.launcher import Mesh
from servers.mesh.processes import wait_until

pytestmark = pytest.mark.integration


class Cli:
    """A `genmesh` process whose output lines are read as they come."""

    def __init__(self, mesh: Mesh, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "GENMESH_URL": mesh.url, "GENMESH_API_KEY": mesh.api_key}
        # Ctrl-C as a terminal delivers it: a suite started in the background (`make test &`) runs
        # with SIGINT ignored, which a child inherits, and the job then ran to its end (exit 0).
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from genmesh.cli import main; main()", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        self.readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("out", self.process.stdout), ("err", self.process.stderr))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, name: str, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))

    def wait_for(self, match: Callable[[str, str], bool], timeout: float = 240) -> str:
        """The first line (stdout or stderr) that ``match`` accepts."""
        while True:
            try:
                name, line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no such line after {timeout} s; saw {self.seen}") from None
            self.seen.append((name, line))
            if match(name, line):
                return line

    def finish(self, timeout: float = 120) -> tuple[int, list[tuple[str, str]]]:
        """The exit code and every line not read yet (the pipes close with the process)."""
        code = self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return code, rest

    def interrupt(self) -> tuple[int, list[str]]:
        """Ctrl-C: the exit code and the stderr lines from here on."""
        self.process.send_signal(signal.SIGINT)
        code, rest = self.finish(60)
        return code, [line for name, line in rest if name == "err"]


def job_line(prefix: str) -> Callable[[str, str], bool]:
    return lambda name, line: name == "err" and line.startswith(f"job {prefix}-")


def test_ctrl_c_on_synthetic_data_cancels_its_job(mesh: Mesh, client: GenmeshClient, tmp_path: Path) -> None:
    cli = Cli(mesh, ["synthetic-data", "--num-images", "3000", "--width", "64", "--height", "64"], tmp_path)
    job_id = cli.wait_for(job_line("tsk")).removeprefix("job ")
    code, err = cli.interrupt()
    assert code == 130 and err == [f"cancelled job {job_id}"], err
    wait_until(
        lambda: client.training.get_job(job_id).status.state == job_pb2.JOB_STATE_CANCELLED,
        timeout=60,
        what="the synthetic-data task to be cancelled",
    )


def test_ctrl_c_on_character_cancels_it_and_keeps_the_finished_stages(
    mesh: Mesh, client: GenmeshClient, tmp_path: Path
) -> None:
    # From a sheet (no LLM stage: cheap): the portrait is drawn at once, the video's 150 steps take a
    # while and are interrupted. --json prints one event a line, so the test sees the portrait's end.
    sheet = {"name": "Ember", "biography": "A tired dragon.", "personality": "sleepy",
             "appearance_prompt": "a tired red dragon, portrait", "motion_prompt": "the dragon yawns"}  # fmt: skip
    (tmp_path / "ember.json").write_text(json.dumps(sheet))
    args = ["character", "a tired dragon", "--sheet", "ember.json", "--seed", "3", "--steps", "150", "--width", "64"]
    cli = Cli(mesh, [*args, "--height", "64", "--json", "-o", "ember"], tmp_path)
    job_id = json.loads(cli.wait_for(lambda name, line: name == "out" and line.startswith("{")))["job_id"]
    cli.wait_for(lambda name, line: name == "out" and '"stage_result"' in line)  # the portrait is stored
    code, err = cli.interrupt()
    assert code == 130 and err[-1] == f"cancelled job {job_id}", err
    portrait = next((tmp_path / "ember").glob("portrait.*"))
    assert portrait.stat().st_size > 0 and any(portrait.name in line for line in err)
    wait_until(
        lambda: client.agent.get_job(job_id).status.state == job_pb2.JOB_STATE_CANCELLED,
        timeout=60,
        what="the character job to be cancelled",
    )


def test_job_cancel_prints_the_job_once_it_has_stopped(mesh: Mesh, client: GenmeshClient, tmp_path: Path) -> None:
    events = client.images.stream_generate("a long one", width=256, height=256, steps=150, seed=2, detach=True)
    job_id = next(events).job_id
    wait_until(lambda: client.images.get_job(job_id).status.progress.step >= 1, timeout=120, what="denoising")
    code, out = Cli(mesh, ["job", "cancel", job_id], tmp_path).finish()
    assert code == 0, out
    printed = "\n".join(line for name, line in out if name == "out")
    assert json.loads(printed)["status"]["state"] == "JOB_STATE_CANCELLED", out
    events.close()
