"""Shared fixtures. Integration fixtures start real processes once per test run (an S3 server, the
genmesh servers, Envoy) through the same launcher as `genmesh up`, wait on health, stop by PID."""

from __future__ import annotations

import os

# Tests must never reach a model hub, and thread counts are explicit (2 shared cores).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GENMESH_THREADS", "2")
