"""The web console's own logic (SSE parsing, the charts' data), tested with node:test, and its size.

node (20 or newer) runs the JavaScript unit tests in tests/unit/console/; without node the test
skips, except under CI where it fails. The first-load size is the gzipped size of every file
the console's first page loads (what the front door sends: it gzips them), held to the issue's
budget of 300 KB.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "servers" / "web" / "console"
BUDGET_BYTES = 300 * 1024


def test_console_logic_passes_its_node_tests() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is needed for the console's unit tests (tests/unit/console) and is missing")
        pytest.skip("node is not installed")
    tests = sorted(str(path) for path in (ROOT / "tests" / "unit" / "console").glob("*.test.mjs"))
    assert tests
    done = subprocess.run([node, "--test", *tests], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), done.stdout


def first_load_files() -> list[Path]:
    """index.html and every file it names or that its modules import statically, transitively."""
    seen: list[Path] = []
    todo = [CONSOLE / "index.html"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".html":
            names = re.findall(r'(?:href|src)="([^":]+)"', text)
        else:  # static imports only: views load when they are opened
            names = re.findall(r'^import [^;]*?from "([^"]+)";', text, re.MULTILINE | re.DOTALL)
        todo += [(path.parent / name).resolve() for name in names if not name.startswith("#")]
    return seen


def test_console_first_load_is_within_budget() -> None:
    files = first_load_files()
    assert CONSOLE / "js" / "main.js" in files and CONSOLE / "console.css" in files
    sizes = {path.relative_to(CONSOLE).as_posix(): len(gzip.compress(path.read_bytes(), 6)) for path in files}
    total = sum(sizes.values())
    everything = sum(len(gzip.compress(path.read_bytes(), 6)) for path in CONSOLE.rglob("*") if path.is_file())
    print(f"console first load: {total} bytes gzipped in {len(files)} files; every view: {everything} bytes")
    assert total <= BUDGET_BYTES, sizes
    assert everything <= BUDGET_BYTES
