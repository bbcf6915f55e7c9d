"""Every CLI misuse is one line on stderr and exit code 2, found before anything is sent (nothing
listens at the URL these runs use); an unreachable gateway is one line too. No tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MISUSES = [
    (["image", "x", "--scheduler", "foo"], "scheduler must be one of"),
    (["train", "--layer", "1", "--architecture", "huge"], "architecture must be one of"),
    (["image", "x", "--init-image", "/nonexistent.png"], "--init-image"),
    (["image", "x", "-o", "/nonexistent_dir/x.png"], "--output folder"),
    (["image", "x", "-o", "x.gif"], "--output must end in one of"),
    (["video", "x", "-o", "clip.avi"], "--output must end in one of"),
    (["job", "get", "nope-1"], "known prefix"),
    (["call", "audio", "GetJob"], "SERVICE must be one of text, image"),
    (["call", "text", "Nope"], "RPC must be one of CancelJob, Chat"),
    (["call", "text", "GetJob", '{"bad": 1}'], "REQUEST is not a GetJobRequest in JSON"),
    (["image", "x", "--mask", "m.png"], "--mask needs --init-image"),
    (["image", "x", "--lora", "ink:strong"], "--lora must be NAME or NAME:WEIGHT"),
    (["jobs", "--state", "sleeping"], "--state must be one of"),
    (["jobs", "--service", "audio"], "--service: unknown audio"),
    (["jobs", "--limit", "0"], "--limit must be between 1 and 200"),
    (["outputs", "--kind", "gif"], "--kind must be one of"),
    (["restore", "layer_1-20261207_120355", "/nonexistent.png"], "IMAGE: cannot read /nonexistent.png"),
    (["restore", "layer_1-20261207_120355", "in.png", "-o", "out.gif"], "--output must end in one of"),
    (["restore", "layer_1-20261207_120355", "s3://bucket-only"], "IMAGE takes a file or s3://BUCKET/KEY"),
    (["character", "x", "--sheet", "/nonexistent.json"], "--sheet: cannot read a JSON sheet"),
]


def genmesh(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GENMESH_URL": "127.0.0.1:1", "GENMESH_API_KEY": "unused"}
    return subprocess.run(
        [sys.executable, "-c", "from genmesh.cli import main; main()", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize(("args", "message"), MISUSES)
def test_misuse_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    done = genmesh(args, tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("args", [["text", "hello"], ["jobs"], ["outputs"]])
def test_an_unreachable_gateway_is_one_line(args: list[str], tmp_path: Path) -> None:
    done = genmesh(args, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: UNAVAILABLE: cannot reach the genmesh gateway (is `genmesh up` running, and --url / GENMESH_URL right?)"
    ]


def test_report_json_prints_whole_numbers_as_integers() -> None:
    from genmesh.cli.training import whole_numbers

    assert whole_numbers({"pairs": 24.0, "psnr": 31.5, "epochs": [{"epoch": 1.0}]}) == {
        "pairs": 24,
        "psnr": 31.5,
        "epochs": [{"epoch": 1}],
    }
