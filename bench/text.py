"""Text generation: direct llama-cpp-python vs the service over gRPC through Envoy vs REST SSE
through Envoy, with the same model, prompt, seed, thread count and max_tokens, in one run.

    .venv/bin/python bench/text.py [--max-tokens 128] [--runs 7] [--threads 2]

Prints a table (median tokens/s, time to first token, tokens and messages per run, measured by
the caller; tokens are counted by the events' ``progress.step``, as one delta may carry several)
with the CPU each path spent per token, by part (see ``CpuMeter``); then the server's CPU per
token, the CPU the gateway path adds per token besides llama (``added_cpu_ms_per_token``: on a
machine whose cores llama.cpp keeps busy, this is what slows generation down), the ratios and
first-token delays paired by round and, last, ``ratio=<gateway gRPC tok/s / direct tok/s>``.
The direct model runs in this process only while the mesh's text server is idle, and each run
starts after a pause, so the two never compete for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx

from genmesh.client import GenmeshClient
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port
from servers.text.models import builtin_model_path

PROMPT = "Count from one to one thousand in words: one, two, three, four,"


class Run(NamedTuple):
    ttft: float  # seconds to the first token, as the caller sees it
    tps: float  # decode tokens/s after the first token
    tokens: int
    messages: int  # pieces of text received (one may carry several tokens)


def timed(steps: Iterator[int]) -> Run:
    """``steps`` yields, per piece of text received, how many tokens were generated so far."""
    start = time.perf_counter()
    first = last = None
    first_step = step = messages = 0
    for step in steps:
        last = time.perf_counter()
        messages += 1
        if first is None:
            first, first_step = last, step
    assert first is not None and last is not None and step > first_step, "no tokens streamed"
    return Run(first - start, (step - first_step) / (last - first), step, messages)


def direct_tokens(llm, max_tokens: int, seed: int) -> Iterator[int]:
    llm.reset()
    step = 0
    for chunk in llm.create_completion(
        PROMPT, max_tokens=max_tokens, temperature=0.8, top_p=0.95, top_k=40, min_p=0.05,
        repeat_penalty=1.1, seed=seed, stream=True,
    ):  # fmt: skip
        if chunk["choices"][0]["finish_reason"] is None:
            step += 1
            yield step


def grpc_tokens(client: GenmeshClient, max_tokens: int, seed: int) -> Iterator[int]:
    for event in client.text.stream_generate(PROMPT, max_tokens=max_tokens, seed=seed):
        if event.WhichOneof("event") == "delta":
            yield event.progress.step


def sse_tokens(http: httpx.Client, max_tokens: int, seed: int) -> Iterator[int]:
    body = {"prompt": PROMPT, "sampling": {"max_tokens": max_tokens, "seed": seed}}
    with http.stream("POST", "/v1/text:generate", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and '"delta"' in line:
                yield json.loads(line[6:])["progress"]["step"]


TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of ``pid``, by thread id."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the thread ended
            continue
        seconds[task.name] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


class CpuMeter:
    """CPU seconds a path spends, by part, summed over the runs measured.

    Direct: ``process`` (this process, where llama.cpp runs). Gateway: the text server's
    ``llama`` threads (the ``threads`` busiest besides the main one: the job worker, which also
    runs llama-cpp-python's Python loop, and llama.cpp's others; their CPU follows the wall time,
    as idle OpenMP threads spin), its ``loop`` (the main thread: asyncio, gRPC writes, event
    fan-out) and ``grpc`` (its other threads), then ``envoy`` and ``client`` (this process reading
    the stream). All but ``llama`` is what the gateway path adds per token, on the same cores."""

    def __init__(self, server_pid: int | None = None, envoy_pid: int | None = None, threads: int = 0) -> None:
        self.server_pid, self.envoy_pid, self.threads = server_pid, envoy_pid, threads
        self.totals: dict[str, float] = {}

    def run(self, steps: Iterator[int]) -> Run:
        server = thread_cpu(self.server_pid) if self.server_pid else {}
        envoy = sum(thread_cpu(self.envoy_pid).values()) if self.envoy_pid else 0.0
        process = time.process_time()
        row = timed(steps)
        parts = {"process" if self.server_pid is None else "client": time.process_time() - process}
        if self.server_pid:
            spent = {tid: cpu - server.get(tid, 0.0) for tid, cpu in thread_cpu(self.server_pid).items()}
            loop = spent.pop(str(self.server_pid), 0.0)
            llama = sorted(spent.values(), reverse=True)[: self.threads]
            parts |= {"llama": sum(llama), "loop": loop, "grpc": sum(spent.values()) - sum(llama)}
        if self.envoy_pid:
            parts["envoy"] = sum(thread_cpu(self.envoy_pid).values()) - envoy
        for name, seconds in parts.items():
            self.totals[name] = self.totals.get(name, 0.0) + seconds
        return row


GATEWAY_PARTS = ("loop", "grpc", "envoy", "client")
SETTLE_SECONDS = 0.25


def measure(paths: dict[str, tuple[CpuMeter, Callable[[], Iterator[int]]]], runs: int) -> dict[str, dict[str, float]]:
    """Runs the paths in turn, ``runs`` rounds, so slow drift of a shared machine hits all alike."""
    samples: dict[str, list[Run]] = {name: [] for name in paths}
    for _ in range(runs):
        for name, (meter, run) in paths.items():
            # llama.cpp's idle OpenMP threads spin a while after a generation: without a pause the
            # previous path's process keeps a core busy into this one's first token.
            time.sleep(SETTLE_SECONDS)
            samples[name].append(meter.run(run()))
    print(f"{'path':<18} {'tokens/s':>9} {'first tok ms':>12} {'tokens':>6} {'msgs':>5}   CPU ms/token", flush=True)
    summary = {}
    for name, rows in samples.items():
        row = {field: statistics.median(getattr(r, field) for r in rows) for field in Run._fields}
        per_token = {part: s * 1000 / sum(r.tokens for r in rows) for part, s in paths[name][0].totals.items()}
        cpu = " ".join(f"{part}={value:.2f}" for part, value in per_token.items())
        print(
            f"{name:<18} {row['tps']:>9.1f} {row['ttft'] * 1000:>12.1f} {row['tokens']:>6.0f} {row['messages']:>5.0f}"
            f"   {cpu}",
            flush=True,
        )
        summary[name] = {**row, **per_token, "added": sum(per_token.get(part, 0.0) for part in GATEWAY_PARTS)}
        pairs = list(zip(rows, next(iter(samples.values())), strict=True))
        summary[name]["paired_ratio"] = statistics.median(r.tps / d.tps for r, d in pairs)
        summary[name]["paired_delay"] = statistics.median(r.ttft - d.ttft for r, d in pairs)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=7)
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
                server, envoy = mesh.servers["text"].pid, mesh.envoy.pid if mesh.envoy else None
                results = measure(
                    {
                        "direct llama-cpp": (CpuMeter(), lambda: direct_tokens(llm, args.max_tokens, args.seed)),
                        "gateway gRPC": (
                            CpuMeter(server, envoy, args.threads),
                            lambda: grpc_tokens(client, args.max_tokens, args.seed),
                        ),
                        "gateway REST SSE": (
                            CpuMeter(server, envoy, args.threads),
                            lambda: sse_tokens(http, args.max_tokens, args.seed),
                        ),
                    },
                    args.runs,
                )
        finally:
            mesh.stop()
    direct, grpc_, sse = (results[name] for name in ("direct llama-cpp", "gateway gRPC", "gateway REST SSE"))
    print(f"first_token_delay_ms grpc={(grpc_['ttft'] - direct['ttft']) * 1000:.1f}", end=" ")
    print(f"sse={(sse['ttft'] - direct['ttft']) * 1000:.1f}")
    print(f"server_cpu_ms_per_token grpc={grpc_['llama'] + grpc_['loop'] + grpc_['grpc']:.2f}", end=" ")
    print(f"sse={sse['llama'] + sse['loop'] + sse['grpc']:.2f} direct={direct['process']:.2f}")
    # What the gateway path adds per token besides llama (server loop and gRPC threads, Envoy, client).
    print(f"added_cpu_ms_per_token grpc={grpc_['added']:.2f} sse={sse['added']:.2f}")
    # Median over the rounds of each run against its round's direct run: the machine's speed drifts less
    # within a round than over the whole bench.
    print(f"paired_ratio grpc={grpc_['paired_ratio']:.3f} sse={sse['paired_ratio']:.3f}")
    print(f"paired_first_token_delay_ms grpc={grpc_['paired_delay'] * 1000:.1f} sse={sse['paired_delay'] * 1000:.1f}")
    print(f"sse_ratio={sse['tps'] / direct['tps']:.3f}")
    print(f"ratio={grpc_['tps'] / direct['tps']:.3f}")


if __name__ == "__main__":
    main()
