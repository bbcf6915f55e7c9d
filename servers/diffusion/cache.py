"""Build-once folders in a cache directory: made under a temporary name, then renamed into place.

A folder that exists under its final name is complete, so readers never see half-written files,
and two processes racing to build the same folder both end up using one complete copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """Return ``dest``, first calling ``build(tmp)`` to fill a fresh folder renamed to ``dest`` when
    ``dest`` does not exist yet. ``build`` must write everything into the folder it is given."""
    dest = Path(dest)
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
