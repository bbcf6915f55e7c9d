"""Shared fixtures. Integration fixtures start real processes once per test run (an S3 server, the
genmesh servers, Envoy) through the same launcher as `genmesh up`, wait on health, stop by PID."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must never reach a model hub, and thread counts are explicit (2 shared cores).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GENMESH_THREADS", "2")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the groups into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's ``--dist loadgroup`` (make test runs two workers): every module that
    uses the shared mesh runs in one worker, which starts that mesh once; every other module (the unit
    tests, the integration tests with a mesh or store of their own) is a group of its own, run by
    whichever worker is free, so its module fixtures are built once."""
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    for path, module_items in modules.items():
        shared = "browser" in path.parts or any("mesh" in item.fixturenames for item in module_items)
        group = "shared-mesh" if shared else path.stem
        for item in module_items:
            item.add_marker(pytest.mark.xdist_group(group))
