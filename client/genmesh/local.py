"""Where a local mesh (`genmesh up`) keeps its state: read by the launcher, the servers' settings and
the CLI's hints, so they name the same folder and files."""

from __future__ import annotations

from pathlib import Path

DATA_DIR_ENV = "GENMESH_DATA_DIR"  # also `genmesh up --data-dir`
DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "genmesh"
KEYS_FILE = "api-keys"  # the generated (or the operator's) keys file inside the data folder
