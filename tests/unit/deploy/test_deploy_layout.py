"""The deploy folders exist, every YAML file parses, and every path the deploy files name exists."""

from __future__ import annotations

import re
from typing import Any

from tests.unit.deploy.helpers import (
    COMPOSE,
    DOCKER,
    DOCKERFILES,
    KUBE,
    ROOT,
    USER_CREATED,
    deploy_files,
    load_docs,
    rel,
    yaml_files,
)

# ------------------------------------------------------------------------------------------------
# Every YAML parses


def test_the_deploy_folders_exist() -> None:
    for name in DOCKERFILES:
        assert (DOCKER / name).is_file(), name
    assert (COMPOSE / "compose.yaml").is_file() and (COMPOSE / ".env.example").is_file()
    assert (KUBE / "kustomization.yaml").is_file()


def test_every_yaml_file_parses(yaml: Any) -> None:
    files = yaml_files()
    assert len(files) >= 15, files
    for path in files:
        docs = load_docs(yaml, path)
        assert docs, f"{rel(path)} is empty"
        assert all(isinstance(doc, dict) for doc in docs), f"{rel(path)}: every document must be a mapping"


def test_paths_named_in_the_deploy_files_exist() -> None:
    """Every repo path a deploy file or its comments name (deploy/...) exists, bar the user-made secrets;
    ``tests/unit/deploy/...`` is another folder, not one of these."""
    for path in deploy_files():
        for mention in re.findall(r"(?<![\w./-])deploy/[A-Za-z0-9_./-]*[A-Za-z0-9_]", path.read_text(encoding="utf-8")):
            if mention in USER_CREATED:
                continue
            assert (ROOT / mention).exists(), f"{rel(path)} names {mention}, which does not exist"
