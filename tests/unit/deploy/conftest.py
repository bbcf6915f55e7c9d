"""Fixtures of the deploy tests (tests/unit/deploy); the helpers are in helpers.py."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML not installed (add pyyaml to the dev extra)")
