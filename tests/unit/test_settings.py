"""Typed settings: flag > environment > default, clear errors, secrets out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from servers.runtime.settings import parse_settings
from servers.text.settings import TextSettings


def test_precedence_flag_over_env_over_default() -> None:
    env = {"GENMESH_TEXT_PORT": "6000", "GENMESH_THREADS": "3", "GENMESH_S3_SECRET_KEY": "topsecret"}
    settings = parse_settings(TextSettings, ["--port", "7000", "--no-s3-secure"], env)
    assert settings.port == 7000
    assert settings.threads == 3
    assert settings.max_queued == 16
    assert settings.s3_secure is False
    assert settings.model_path is None
    assert "topsecret" not in repr(settings)


def test_paths_and_optionals() -> None:
    settings = parse_settings(TextSettings, ["--model-path", "/m/x.gguf", "--data-dir", "/d"], {})
    assert settings.model_path == Path("/m/x.gguf")
    assert settings.resolved_models_dir() == Path("/d/models/text")


def test_bad_value_exits_with_the_variable_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_settings(TextSettings, [], {"GENMESH_THREADS": "many"})
    assert "GENMESH_THREADS" in capsys.readouterr().err
