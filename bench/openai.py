"""OpenAI-compatible streaming through the gateway (Envoy + the web front door + the Text server)
vs direct llama-cpp-python, with the same model, prompt, seed, sampling, thread count and max_tokens, in one run.

    .venv/bin/python bench/openai.py [--max-tokens 128] [--runs 5] [--threads 2]

Two pairs: ``/v1/completions`` against ``Llama.create_completion`` (the same raw prompt), and
``/v1/chat/completions`` against ``Llama.create_completion`` of the same conversation in the
model's chat template, as the Text server writes it. The OpenAI side is read as a client reads it
(SSE over HTTP/1.1 with httpx; the ``openai`` package is not imported because this file's name
would shadow it), tokens counted by
the final usage chunk (``stream_options.include_usage``), as one chunk may carry several tokens.
Tokens/s is decode speed after the first token, by the caller's clock; the paths take turns, with a
pause between runs so llama.cpp's spinning threads never overlap. Prints a table, then one
``ratio_<pair>=<gateway tok/s / direct tok/s>`` line per pair (medians of the per-round ratios).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx

from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port
from servers.text.chat_templates import ChatFormatter
from servers.text.models import builtin_model_path
from servers.text.types import ChatTurn

PROMPT = "Count from one to one thousand in words: one, two, three, four,"
MESSAGES = [{"role": "user", "content": "Once upon a time"}]
# Both sides sample alike: named in full, since genmesh's repeat_penalty default (1.1) is not llama.cpp's (1.0).
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}
SETTLE_SECONDS = 0.25  # llama.cpp's idle OpenMP threads spin a while after a generation


class Run(NamedTuple):
    ttft: float  # seconds to the first text, as the caller sees it
    tps: float  # decode tokens/s after the first one
    tokens: int


def timed(pieces: Iterator[int | None]) -> Run:
    """``pieces`` yields None per piece of text received and, last, the token count."""
    start = time.perf_counter()
    first = last = None
    tokens = 0
    for piece in pieces:
        if piece is not None:
            tokens = piece
            continue
        last = time.perf_counter()
        first = first or last
    assert first is not None and last is not None and last > first and tokens > 1, "nothing streamed"
    return Run(first - start, (tokens - 1) / (last - first), tokens)


def chat_prompt(llm) -> tuple[str, list[str]]:
    """The conversation in the model's chat template as the Text server writes it (llama-cpp-python's
    own ``create_chat_completion`` ends the base model's turn at once), and its stop strings."""
    formatter = ChatFormatter(
        {key: str(value) for key, value in llm.metadata.items()},
        bos_token=llm.detokenize([llm.token_bos()]).decode(errors="ignore"),
        eos_token=llm.detokenize([llm.token_eos()]).decode(errors="ignore"),
    )
    text, stops = formatter.prompt([ChatTurn(**message) for message in MESSAGES])
    return text, list(stops)


def direct(llm, chat: bool, max_tokens: int, seed: int) -> Iterator[int | None]:
    llm.reset()
    prompt, stops = chat_prompt(llm) if chat else (PROMPT, [])
    options = {"max_tokens": max_tokens, "seed": seed, "stream": True, "stop": stops, **SAMPLING}
    texts = (chunk["choices"][0]["text"] for chunk in llm.create_completion(prompt, **options))
    count = 0
    for text in texts:
        if text:  # llama-cpp-python streams one chunk per token; an empty one is a partial character
            count += 1
            yield None
    yield count


def gateway(http: httpx.Client, chat: bool, max_tokens: int, seed: int) -> Iterator[int | None]:
    body = {"model": "", "max_tokens": max_tokens, "seed": seed, "stream": True, **SAMPLING,
            "stream_options": {"include_usage": True}}  # fmt: skip
    body |= {"messages": MESSAGES} if chat else {"prompt": PROMPT}
    path = "/v1/chat/completions" if chat else "/v1/completions"
    with http.stream("POST", path, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                yield chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and (
                chunk["choices"][0].get("delta", {}).get("content") or chunk["choices"][0].get("text")
            ):
                yield None


def measure(pairs: dict[str, tuple[Callable[[], Iterator], Callable[[], Iterator]]], runs: int) -> None:
    print(f"{'path':<26} {'tokens/s':>9} {'first text ms':>13} {'tokens':>6}", flush=True)
    for name, (direct_run, gateway_run) in pairs.items():
        rows: dict[str, list[Run]] = {"direct": [], "gateway": []}
        for _ in range(runs):  # in turn, so slow drift of a shared machine hits both alike
            for side, run in (("direct", direct_run), ("gateway", gateway_run)):
                time.sleep(SETTLE_SECONDS)
                rows[side].append(timed(run()))
        for side, samples in rows.items():
            tps = statistics.median(r.tps for r in samples)
            ttft = statistics.median(r.ttft for r in samples) * 1000
            tokens = statistics.median(r.tokens for r in samples)
            print(f"{name + ' ' + side:<26} {tps:>9.1f} {ttft:>13.1f} {tokens:>6.0f}", flush=True)
        ratio = statistics.median(g.tps / d.tps for g, d in zip(rows["gateway"], rows["direct"], strict=True))
        print(f"ratio_{name}={ratio:.3f}", flush=True)


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
            port=free_port(), services=("text",), data_dir=data_dir, threads=args.threads,
            rate_limit_rps=10_000, rate_limit_burst=10_000, service_args={"text": ["--context-length", "2048"]},
        )  # fmt: skip
        mesh = Mesh(options).start()
        try:
            llm = Llama(model_path=str(model_path), n_ctx=2048, n_threads=args.threads,
                        n_threads_batch=args.threads, verbose=False)  # fmt: skip
            headers = {"Authorization": f"Bearer {mesh.api_key}"}
            with httpx.Client(base_url=f"http://{mesh.url}", headers=headers, timeout=300, trust_env=False) as http:
                pairs = {
                    kind: (
                        lambda chat=chat: direct(llm, chat, args.max_tokens, args.seed),
                        lambda chat=chat: gateway(http, chat, args.max_tokens, args.seed),
                    )
                    for kind, chat in (("completions", False), ("chat", True))
                }
                for chat in (False, True):  # warm every path once (model pages, connections)
                    timed(direct(llm, chat, 8, args.seed))
                    timed(gateway(http, chat, 8, args.seed))
                print(f"Gemma 3 270M Q4_K_M, {args.threads} threads, max_tokens={args.max_tokens}, runs={args.runs}")
                measure(pairs, args.runs)
        finally:
            mesh.stop()


if __name__ == "__main__":
    main()
