"""Text generation: direct llama-cpp-python vs the service over gRPC through Envoy vs REST SSE
through Envoy, with the same model, prompt, seed, thread count and max_tokens, in one run.

    .venv/bin/python bench/text.py [--max-tokens 128] [--runs 5] [--threads 2]

Prints a table (median tokens/s and time to first token, measured by the caller) and, last,
``ratio=<gateway gRPC tok/s / direct tok/s>``. The direct model runs in this process only while
the mesh's text server is idle, so the two never compete for the cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from genmesh.client import GenmeshClient
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port
from servers.text.models import builtin_model_path

PROMPT = "Count from one to one thousand in words: one, two, three, four,"


def timed(tokens: Iterator[object]) -> tuple[float, float, int]:
    """(seconds to first token, decode tokens/s after the first, tokens) as seen by the caller."""
    start = time.perf_counter()
    first = last = None
    count = 0
    for _ in tokens:
        last = time.perf_counter()
        first = first or last
        count += 1
    assert first is not None and last is not None and count > 1, "no tokens streamed"
    return first - start, (count - 1) / (last - first), count


def direct_tokens(llm, max_tokens: int, seed: int) -> Iterator[object]:
    llm.reset()
    for chunk in llm.create_completion(
        PROMPT, max_tokens=max_tokens, temperature=0.8, top_p=0.95, top_k=40, min_p=0.05,
        repeat_penalty=1.1, seed=seed, stream=True,
    ):  # fmt: skip
        if chunk["choices"][0]["finish_reason"] is None:
            yield chunk


def grpc_tokens(client: GenmeshClient, max_tokens: int, seed: int) -> Iterator[object]:
    for event in client.text.stream_generate(PROMPT, max_tokens=max_tokens, seed=seed):
        if event.WhichOneof("event") == "delta":
            yield event


def sse_tokens(http: httpx.Client, max_tokens: int, seed: int) -> Iterator[object]:
    body = {"prompt": PROMPT, "sampling": {"max_tokens": max_tokens, "seed": seed}}
    with http.stream("POST", "/v1/text:generate", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and '"delta"' in line:
                yield json.loads(line[6:])


def measure(paths: dict[str, Callable[[], Iterator[object]]], runs: int) -> dict[str, dict[str, float]]:
    """Runs the paths in turn, ``runs`` rounds, so slow drift of a shared machine hits all alike."""
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, run in paths.items():
            samples[name].append(timed(run()))
    summary = {}
    for name, rows in samples.items():
        ttft = statistics.median(r[0] for r in rows) * 1000
        tps = statistics.median(r[1] for r in rows)
        tokens = statistics.median(r[2] for r in rows)
        print(f"{name:<22} {tps:>10.1f} {ttft:>12.1f} {tokens:>8.0f}", flush=True)
        summary[name] = {"tps": tps, "ttft_ms": ttft}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from llama_cpp import Llama

    with tempfile.TemporaryDirectory(prefix="genmesh-bench-") as tmp:
        data_dir = Path(tmp)
        model_path = builtin_model_path(data_dir / "models" / "text")
        options = LaunchOptions(
            port=free_port(),
            services=("text",),
            data_dir=data_dir,
            threads=args.threads,
            rate_limit_rps=10_000,
            rate_limit_burst=10_000,
            service_args={"text": ["--context-length", "2048"]},
        )
        mesh = Mesh(options).start()
        try:
            llm = Llama(
                model_path=str(model_path), n_ctx=2048, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False,
            )  # fmt: skip
            with (
                GenmeshClient(mesh.url, mesh.api_key) as client,
                httpx.Client(base_url=f"http://{mesh.url}", headers={"x-api-key": mesh.api_key}, timeout=120) as http,
            ):
                # Warm every path once (model pages, connections), then measure in turn.
                timed(direct_tokens(llm, 8, args.seed))
                timed(grpc_tokens(client, 8, args.seed))
                timed(sse_tokens(http, 8, args.seed))
                print(f"Gemma 3 270M Q4_K_M, {args.threads} threads, max_tokens={args.max_tokens}, runs={args.runs}")
                print(f"{'path':<22} {'tokens/s':>10} {'first tok ms':>12} {'tokens':>8}")
                results = measure(
                    {
                        "direct llama-cpp": lambda: direct_tokens(llm, args.max_tokens, args.seed),
                        "gateway gRPC": lambda: grpc_tokens(client, args.max_tokens, args.seed),
                        "gateway REST SSE": lambda: sse_tokens(http, args.max_tokens, args.seed),
                    },
                    args.runs,
                )
        finally:
            mesh.stop()
    direct, grpc_, sse = (results[name] for name in ("direct llama-cpp", "gateway gRPC", "gateway REST SSE"))
    print(f"first_token_delay_ms grpc={grpc_['ttft_ms'] - direct['ttft_ms']:.1f}", end=" ")
    print(f"sse={sse['ttft_ms'] - direct['ttft_ms']:.1f}")
    print(f"sse_ratio={sse['tps'] / direct['tps']:.3f}")
    print(f"ratio={grpc_['tps'] / direct['tps']:.3f}")


if __name__ == "__main__":
    main()
