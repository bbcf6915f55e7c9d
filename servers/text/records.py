"""Every text result is also saved as JSON (request, output, usage) in the ``outputs`` bucket."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

from servers.text.types import TextOutcome, TextRequest
from storage.buckets import OUTPUTS
from storage.keys import output_key
from storage.object_store import ObjectStore, StoredObject


def save_record(
    store: ObjectStore, job_id: str, method: str, request: TextRequest, outcome: TextOutcome, client_id: str
) -> StoredObject:
    record = {
        "job_id": job_id,
        "method": method,
        "client_id": client_id,
        "created": datetime.now(UTC).isoformat(),
        "request": dataclasses.asdict(request),
        "output": {"text": outcome.text, "finish_reason": str(outcome.finish_reason)},
        "usage": {
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
        },
        "timings": {
            "time_to_first_token_ms": round(outcome.time_to_first_token_ms, 3),
            "tokens_per_second": round(outcome.tokens_per_second, 3),
            "total_seconds": round(outcome.total_seconds, 4),
        },
        "model": outcome.model,
        "seed": outcome.seed,
    }
    data = json.dumps(record, ensure_ascii=False, indent=2).encode()
    return store.put_bytes(OUTPUTS, output_key(job_id, "result.json"), data, "application/json")
