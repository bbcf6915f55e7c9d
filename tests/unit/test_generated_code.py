"""The committed stubs, Envoy descriptor set and OpenAPI document match the protos; the protos are
buf-lint clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def generated_files(root: Path) -> dict[str, bytes]:
    files = {
        str(path.relative_to(root)): path.read_bytes() for path in (root / "client" / "genmesh").glob("*/v1/*_pb2*.py*")
    }
    for name in ("deploy/envoy/genmesh.pb", "deploy/openapi.json"):
        files[name] = (root / name).read_bytes()
    return files


def test_generated_code_and_descriptor_are_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(tmp_path)], check=True)
    fresh, committed = generated_files(tmp_path), generated_files(ROOT)
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"generated code is stale, run `make protos`: {stale}"


@pytest.mark.skipif(shutil.which("buf", path=str(Path(sys.executable).parent)) is None, reason="buf not installed")
def test_buf_lint_is_clean() -> None:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent))
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--buf-deps-only"], check=True)
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
