"""schemathesis hooks for the REST fuzz test (loaded with SCHEMATHESIS_HOOKS): one line per request
sent, ``<METHOD> <path template> <status>``, appended to the file GENMESH_FUZZ_CALLS names, so the
test can say how many requests each operation got."""

from __future__ import annotations

import os

import schemathesis


@schemathesis.hook
def after_call(context, case, response) -> None:
    with open(os.environ["GENMESH_FUZZ_CALLS"], "a", encoding="utf-8") as calls:
        calls.write(f"{case.operation.method.upper()} {case.operation.path} {response.status_code}\n")
