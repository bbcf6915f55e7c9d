"""Image generation: the same pipeline called directly vs through the service over gRPC via Envoy
(including the S3 upload and the final event), in one run.

    .venv/bin/python bench/image.py [--size 256] [--steps 20] [--runs 5] [--threads 2]
    .venv/bin/python bench/image.py --full-size --size 512 --steps 25      # on a GPU
    .venv/bin/python bench/image.py --full-size --size 512 --steps 25 --compile   # the compiled server

Prints a table and, last, ``ratio=<service seconds / direct seconds>`` (medians). The default uses
the built-in tiny SD1.5-shaped model; ``--full-size`` builds SD1.5-size random weights (fp16 on a
GPU) in the bench's data folder, which the service then loads like a user's model. On a GPU it
also reports peak memory, and ``--memory-cap-gib 12`` repeats the direct run under a 12 GiB cap.
``--compile`` starts the server with ``--compile`` (warmed up at the bench's size, kernels cached in
the bench's data folder) against the same eager direct call, and reports the compile + warm-up
time, the first call, the steady calls, and a second start on the warm cache with its first call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from compiled_start import compile_flags, describe, start  # bench/, beside this script
from full_size import SD15_NAME, build_full_size_sd15

from genmesh.client import GenmeshClient
from servers.compute.devices import configure_threads
from servers.diffusion.builtin import TINY_SD15
from servers.diffusion.generate import GenerationParams, generate
from servers.diffusion.loading import load_model
from servers.diffusion.sources import ModelSource
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def median_seconds(run: Callable[[], object], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-size", action="store_true", help="SD1.5-size random weights (for a GPU)")
    parser.add_argument("--memory-cap-gib", type=float, default=0.0, help="GPU only: also run direct under a cap")
    parser.add_argument("--compile", action="store_true", help="the server compiles (direct stays eager)")
    args = parser.parse_args()
    configure_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="genmesh-bench-") as tmp:
        data_dir = Path(tmp)
        cache_dir = data_dir / "cache" / "diffusion"
        models_dir = data_dir / "models" / "image"
        models_dir.mkdir(parents=True)
        if args.full_size:
            source = ModelSource.parse(str(build_full_size_sd15(models_dir, cache_dir)))
            model_name = SD15_NAME
        else:
            source = ModelSource.parse(f"builtin:{TINY_SD15}")
            model_name = TINY_SD15
        direct_model = load_model(source, cache_dir=cache_dir)
        device = direct_model.device
        params = GenerationParams(
            prompt=PROMPT, width=args.size, height=args.size, steps=args.steps, seed=1, scheduler="euler"
        )

        def direct() -> None:
            generate(direct_model, params)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        flags = compile_flags(args.compile, f"{args.size}x{args.size}", data_dir / "cache" / "inductor")

        def make_mesh() -> Mesh:
            return Mesh(
                LaunchOptions(
                    port=free_port(), services=("image",), data_dir=data_dir, threads=args.threads,
                    service_args={"image": ["--model", model_name, *flags]},
                )
            )  # fmt: skip

        def call(client: GenmeshClient) -> Callable[[], None]:
            return lambda: client.images.generate(
                PROMPT, width=args.size, height=args.size, steps=args.steps, seed=1, scheduler="euler"
            )

        mesh, first_start = start(make_mesh, "image")
        try:
            with GenmeshClient(mesh.url, mesh.api_key) as client:
                service = call(client)
                direct()  # warm-up: kernels, allocator, connections
                first_call = median_seconds(service, 1)[0]
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                direct_times, service_times = [], []
                for _ in range(args.runs):  # interleaved, so drift on a shared machine hits both alike
                    direct_times += median_seconds(direct, 1)
                    service_times += median_seconds(service, 1)
        finally:
            mesh.stop()
        if args.compile:  # a restart on the same data folder: inductor's cache is warm
            mesh, second_start = start(make_mesh, "image")
            try:
                with GenmeshClient(mesh.url, mesh.api_key) as client:
                    first_call_after_restart = median_seconds(call(client), 1)[0]
            finally:
                mesh.stop()

    direct_s, service_s = statistics.median(direct_times), statistics.median(service_times)
    label = "SD1.5-size random" if args.full_size else "tiny SD1.5-shaped"
    print(f"{label}, {args.size}x{args.size}, {args.steps} steps, device={device}, runs={args.runs}")
    print(f"{'path':<34} {'median s':>9} {'min s':>8}")
    print(f"{'direct diffusers call':<34} {direct_s:>9.3f} {min(direct_times):>8.3f}")
    print(f"{'service via Envoy (+S3, result)':<34} {service_s:>9.3f} {min(service_times):>8.3f}")
    print(describe("server start" + (" (--compile)" if args.compile else ""), first_start))
    print(f"service first call: {first_call:.3f} s")
    if args.compile:
        print(describe("second start, warm compile cache", second_start))
        print(f"service first call after the restart: {first_call_after_restart:.3f} s")
        if first_start.compile_s and second_start.compile_s:
            print(f"restart_compile_ratio={second_start.compile_s / first_start.compile_s:.3f}")
    if device.type == "cuda":
        print(f"direct peak memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
        if args.memory_cap_gib:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), device)
            capped = statistics.median(median_seconds(direct, args.runs))
            print(f"direct under a {args.memory_cap_gib:g} GiB cap: {capped:.3f} s")
    print(f"ratio={service_s / direct_s:.3f}")


if __name__ == "__main__":
    main()
