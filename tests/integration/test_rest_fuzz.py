"""schemathesis against the real gateway, driven by the served OpenAPI document: every non-streaming
genmesh REST operation gets at least 50 generated requests (boundary values, then random ones, most
of them invalid on purpose); none may answer 5xx, and every answer must have a documented status,
content type and shape. The mesh must still be healthy afterwards.

Left out: the routes that start work (the generation streams, embeddings, CreateTrainingJob,
synthetic data, evaluate/restore) and WatchJob streams: fuzzing them queues hundreds of real jobs of
any size the ranges allow (a 2048x2048 image at 150 steps runs for hours on a CPU); their refusals
are covered by test_refused_before_queueing.py and test_strict_json.py. Seen once by hand against
`genmesh up` (3,999 requests, generations included): no 5xx.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 50
PATH_ONLY_EXAMPLES = 20
# Routes that start work (every generation, embeddings, training, synthetic data, evaluate, restore)
# and re-watch streams. One regex: schemathesis keeps only the last --exclude-path-regex.
LEFT_OUT = r":(generate|chat|embed|evaluate|restore|watch)$|/character$|^/v1/training/jobs$"


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    gateway_url: str, api_key: str, tmp_path: Path
) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary is not None, "schemathesis is not installed (make install installs the dev extra)"
    calls = tmp_path / "calls.txt"
    environment = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.schemathesis_hooks",
        "GENMESH_FUZZ_CALLS": str(calls),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        binary, "run", f"{gateway_url}/openapi.json", "--url", gateway_url,
        "--header", f"x-api-key: {api_key}",
        "--max-examples", str(EXAMPLES), "--seed", "1", "--phases", "coverage,fuzzing",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--exclude-path-regex", LEFT_OUT,
        "--request-timeout", "30", "--no-color",
        "--rate-limit", "60/s",  # under the key's 100/s, so the tests after it are not throttled
    ]  # fmt: skip
    result = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    counted = collections.Counter(" ".join(line.split()[:2]) for line in calls.read_text().splitlines())
    statuses = collections.Counter(line.split()[2] for line in calls.read_text().splitlines())
    print(f"\nschemathesis: {sum(counted.values())} requests; by status {dict(sorted(statuses.items()))}")
    for operation, count in sorted(counted.items()):
        print(f"  {count:5d}  {operation}")
    assert len(counted) >= 20
    # A route without parameters or body has only so many distinct requests (schemathesis sends each once).
    document = httpx.get(f"{gateway_url}/openapi.json", timeout=30).json()
    with_inputs = {
        operation: count
        for operation, count in counted.items()
        if _has_inputs(document["paths"][operation.split()[1]][operation.split()[0].lower()])
    }
    assert min(with_inputs.values()) >= PATH_ONLY_EXAMPLES, counted
    # Query parameters or a body give room for many distinct requests; a path of one id much less
    # (schemathesis sends each distinct request once: 24 to 60 for DELETE /v1/outputs/{job_id}).
    roomy = {operation: count for operation, count in with_inputs.items() if _has_query_or_body(document, operation)}
    assert min(roomy.values()) >= EXAMPLES, counted
    assert not any(status.startswith("5") for status in statuses)
    health = httpx.get(f"{gateway_url}/v1/text/models", headers={"x-api-key": api_key}, timeout=30)
    assert health.status_code == 200


def _has_inputs(operation: dict) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def _has_query_or_body(document: dict, operation: str) -> bool:
    method, path = operation.split()
    spec = document["paths"][path][method.lower()]
    return bool(spec.get("requestBody")) or any(p["in"] == "query" for p in spec.get("parameters", ()))
