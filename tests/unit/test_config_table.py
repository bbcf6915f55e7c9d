"""The configuration table in deploy/README.md is generated from the settings classes
(``python -m servers.config_table``): stale tables and undocumented GENMESH_* names fail here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from servers import config_table
from servers.runtime.settings import env_name, setting


def test_committed_table_matches_the_settings_classes() -> None:
    committed = config_table.README.read_text(encoding="utf-8")
    assert config_table.splice(committed, config_table.render()) == committed, (
        "deploy/README.md's configuration table is stale: run `python -m servers.config_table`"
    )
    assert config_table.main(["--check"]) == 0


def test_every_genmesh_variable_in_the_code_is_in_the_table() -> None:
    unlisted = config_table.unlisted_names()
    assert not unlisted, f"GENMESH_* names read by code but in no settings class nor OUTSIDE_SETTINGS: {unlisted}"


def test_the_outside_list_names_only_variables_the_code_reads() -> None:
    in_code = config_table.names_in_code()
    for name in config_table.OUTSIDE_SETTINGS:
        prefix = name.split("<")[0]
        assert any(found == name or ("<" in name and found.startswith(prefix)) for found in in_code), name


def test_every_settings_field_gets_a_row_with_its_readers() -> None:
    table = config_table.render()
    for service, cls in config_table.settings_classes().items():
        for field in dataclasses.fields(cls):
            env = env_name(field, cls)
            assert f"| `{env}` |" in table, (service, env)
    row = next(line for line in table.splitlines() if line.startswith("| `GENMESH_IMAGE_MODELS_DIR`"))
    assert "| image, models |" in row  # two classes read it, each with its own help text
    assert "image: folder of diffusers" in row and "models: where SD1.5/SDXL checkpoints land" in row


@dataclasses.dataclass(frozen=True)
class _One:
    data_dir: Path = setting(Path.home() / ".local" / "share" / "genmesh", "where state lives")
    size: int = setting(1, "a | b, under <data_dir>/x")


@dataclasses.dataclass(frozen=True)
class _Two:
    size: int = setting(2, "a | b, under <data_dir>/x")


def test_rows_merge_classes_and_escape_cells() -> None:
    rows = {row.env: row for row in config_table.rows({"one": _One, "two": _Two})}
    assert rows["GENMESH_DATA_DIR"].defaults == {"one": "`~/.local/share/genmesh`"}  # never this machine's home
    assert config_table.grouped(rows["GENMESH_SIZE"].defaults, ["one", "two"]) == "one: `1`; two: `2`"
    assert config_table.grouped(rows["GENMESH_SIZE"].helps, ["one", "two"]) == "a | b, under <data_dir>/x"
    assert config_table.cell("a | b, under <data_dir>/x") == "a \\| b, under `<data_dir>`/x"


def test_compose_variables_name_their_default_and_what_they_fill(tmp_path: Path) -> None:
    pytest.importorskip("yaml", reason="PyYAML not installed (the dev extra)")
    (tmp_path / "compose.yaml").write_text(
        "x-env: &env\n"
        "  GENMESH_THREADS: ${GENMESH_THREADS:-4}\n"
        "  GENMESH_S3_PUBLIC_ENDPOINT: ${GENMESH_S3_PUBLIC_ENDPOINT:-localhost:${GENMESH_GATEWAY_PORT:-8080}}\n"
        "services:\n"
        "  text:\n"
        "    environment:\n"
        "      <<: *env\n"
        "      GENMESH_DRAIN_SECONDS: ${GENMESH_TEXT_DRAIN_SECONDS:-60}\n"
        "  gateway:\n"
        "    environment: {GENMESH_API_KEYS: '${GENMESH_API_KEYS:?set GENMESH_API_KEYS}', GENMESH_X: '${GENMESH_X}'}\n"
        "    ports: ['${GENMESH_GATEWAY_PORT:-8080}:8080']\n"
    )
    found = config_table.compose_variables(tmp_path)
    assert found["GENMESH_THREADS"].default == "`4`"
    assert found["GENMESH_THREADS"].sets == {"GENMESH_THREADS": ["text"]}  # the anchor's use, not the anchor
    assert found["GENMESH_S3_PUBLIC_ENDPOINT"].default == "`localhost:${GENMESH_GATEWAY_PORT:-8080}`"
    assert found["GENMESH_TEXT_DRAIN_SECONDS"].sets == {"GENMESH_DRAIN_SECONDS": ["text"]}
    assert found["GENMESH_API_KEYS"].default == "(required)"
    assert found["GENMESH_X"].default == "(empty)"
    assert found["GENMESH_GATEWAY_PORT"].sets == {"ports": ["gateway"]}


def test_splice_replaces_only_the_marked_block() -> None:
    document = f"intro\n{config_table.BEGIN}\nold\n{config_table.END}\noutro\n"
    block = f"{config_table.BEGIN}\nnew\n{config_table.END}\n"
    assert config_table.splice(document, block) == f"intro\n{block}outro\n"
