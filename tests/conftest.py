"""Shared fixtures. Integration fixtures start real processes once per test run (an S3 server, the
genmesh servers, Envoy) through the same launcher as `genmesh up`, wait on health, stop by PID."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must never reach a model hub, and thread counts are explicit (2 shared cores).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GENMESH_THREADS", "2")


# Integration modules that start their own processes (a mesh, a store, an Envoy) and never use the
# shared mesh: the second pytest worker runs them beside the unit tests. Checked at collection.
OWN_PROCESSES = frozenset(
    {"test_compile_gateway", "test_server_tls", "test_storage", "test_strict_json", "test_training_registry_s3"}
)
SHARED_MESH = "shared-mesh"


def scope_of(nodeid: str) -> str:
    """What one pytest-xdist worker runs as a whole: every integration module on the shared mesh (that
    worker starts it once), else the test's module (its module fixtures are built once)."""
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/integration/") and Path(path).stem not in OWN_PROCESSES:
        return SHARED_MESH
    return path


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``make test`` runs two workers with ``--dist loadgroup``, scheduled by :func:`scope_of`: with
    pytest 9.2 xdist's own groups (``xdist_group`` marks) no longer take effect (pytest-xdist#1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ByScope(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_mesh = "browser" in item.path.parts or "mesh" in item.fixturenames
        if uses_mesh and item.path.stem in OWN_PROCESSES:
            raise pytest.UsageError(f"{item.nodeid} uses the shared mesh: take its module out of OWN_PROCESSES")
