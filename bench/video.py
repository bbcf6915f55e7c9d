"""Video generation: the same AnimateDiff pipeline called directly (plus the same GIF/MP4 export) vs
the service through Envoy (including encoding, the S3 upload and the final event), in one run.

    .venv/bin/python bench/video.py [--size 128] [--frames 16] [--steps 10] [--runs 3] [--threads 2]
    .venv/bin/python bench/video.py --full-size --size 512 --frames 16 --steps 25 --memory-cap-gib 12   # GPU
    .venv/bin/python bench/video.py --full-size --size 512 --frames 16 --steps 25 --compile   # compiled server

Prints a table and, last, ``ratio=<service seconds / direct seconds>`` (medians). The default uses
the built-in tiny SD1.5 and motion adapter; ``--full-size`` builds SD1.5-size random weights and a
v2-size random motion adapter (fp16 on a GPU) in the bench's data folder, which the service then
loads like a user's models. On a GPU it reports the direct run's peak memory, and
``--memory-cap-gib 12`` repeats the direct run under that cap (what a 12 GB card allows).
The direct side is exactly what a user would write with diffusers: ``AnimateDiffPipeline`` with the
adapter, DDIM with AnimateDiff's settings, VAE slicing and ``decode_chunk_size``, then export.
``--compile`` starts the server with ``--compile`` (warmed up at the bench's size and frame count,
kernels cached in the bench's data folder) against the same eager direct call, and reports the
compile + warm-up time, the first call, the steady calls, and a second start on the warm cache
with its first call. (The peak memory printed is the direct pipeline's; the server's own is in
``nvidia-smi`` / ``rocm-smi`` while it runs.)
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
from compiled_start import compile_flags, describe, start
from full_size import MOTION_ADAPTER_NAME, SD15_NAME, build_full_size_motion_adapter, build_full_size_sd15

from genmesh.client import GenmeshClient
from servers.compute.devices import configure_threads, default_dtype, select_device
from servers.diffusion.builtin import TINY_MOTION_ADAPTER, TINY_SD15, tiny_motion_adapter_folder, tiny_sd15_folder
from servers.diffusion.motion import animatediff_scheduler_config
from servers.media.video import encode_video
from servers.mesh.launcher import LaunchOptions, Mesh
from servers.mesh.processes import free_port

PROMPT = "waves rolling onto a beach at sunset"


def direct_pipeline(model_dir: Path, adapter_dir: Path, device: torch.device):
    """The pipeline as a user builds it from the diffusers docs."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

    dtype = default_dtype(device)
    adapter = MotionAdapter.from_pretrained(str(adapter_dir), dtype=dtype, local_files_only=True)
    pipe = AnimateDiffPipeline.from_pretrained(
        str(model_dir), motion_adapter=adapter, dtype=dtype, local_files_only=True, safety_checker=None
    )
    pipe.scheduler = DDIMScheduler.from_config(animatediff_scheduler_config(pipe.scheduler.config))
    pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--format", choices=("gif", "mp4", "webp"), default="gif")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-chunk-size", type=int, default=2)
    parser.add_argument("--full-size", action="store_true", help="SD1.5 + v2 motion adapter sizes (for a GPU)")
    parser.add_argument("--memory-cap-gib", type=float, default=0.0, help="GPU only: also run direct under a cap")
    parser.add_argument("--compile", action="store_true", help="the server compiles (direct stays eager)")
    args = parser.parse_args()
    configure_threads(args.threads)
    device = select_device("auto")

    with tempfile.TemporaryDirectory(prefix="genmesh-bench-") as tmp:
        data_dir = Path(tmp)
        cache_dir = data_dir / "cache" / "diffusion"
        models_dir, adapters_dir = data_dir / "models" / "image", data_dir / "models" / "motion"
        models_dir.mkdir(parents=True)
        adapters_dir.mkdir(parents=True)
        if args.full_size:
            model_dir = build_full_size_sd15(models_dir, cache_dir)
            adapter_dir = build_full_size_motion_adapter(adapters_dir)
            names = (SD15_NAME, MOTION_ADAPTER_NAME)
        else:
            model_dir, adapter_dir = tiny_sd15_folder(cache_dir), tiny_motion_adapter_folder(cache_dir)
            names = (TINY_SD15, TINY_MOTION_ADAPTER)
        pipe = direct_pipeline(model_dir, adapter_dir, device)

        def direct() -> None:
            frames = pipe(
                prompt=PROMPT, num_frames=args.frames, width=args.size, height=args.size,
                num_inference_steps=args.steps, guidance_scale=7.5, decode_chunk_size=args.decode_chunk_size,
                generator=torch.Generator("cpu").manual_seed(1),
            ).frames[0]  # fmt: skip
            encode_video(frames, args.format, fps=args.fps)

        service_args = ["--model", names[0], "--motion-adapter", names[1]]
        service_args += ["--decode-chunk-size", str(args.decode_chunk_size)]
        warmup = f"{args.size}x{args.size}x{args.frames}"
        service_args += compile_flags(args.compile, warmup, data_dir / "cache" / "inductor")

        def make_mesh() -> Mesh:
            return Mesh(
                LaunchOptions(
                    port=free_port(), services=("video",), data_dir=data_dir, threads=args.threads,
                    service_args={"video": service_args},
                )
            )  # fmt: skip

        def call(client: GenmeshClient) -> Callable[[], object]:
            return lambda: client.videos.generate(
                PROMPT, width=args.size, height=args.size, num_frames=args.frames, steps=args.steps,
                fps=args.fps, seed=1, output_format=args.format,
            )  # fmt: skip

        mesh, first_start = start(make_mesh, "video")
        try:
            with GenmeshClient(mesh.url, mesh.api_key) as client:
                service = call(client)
                direct()  # warm-up: kernels, allocator, connections
                first_call = timed(service)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                direct_times, service_times = [], []
                for _ in range(args.runs):  # interleaved, so drift on a shared machine hits both alike
                    direct_times.append(timed(direct))
                    service_times.append(timed(service))
        finally:
            mesh.stop()
        if args.compile:  # a restart on the same data folder: inductor's cache is warm
            mesh, second_start = start(make_mesh, "video")
            try:
                with GenmeshClient(mesh.url, mesh.api_key) as client:
                    first_call_after_restart = timed(call(client))
            finally:
                mesh.stop()

        direct_s, service_s = statistics.median(direct_times), statistics.median(service_times)
        label = "SD1.5 + v2 adapter, random" if args.full_size else "tiny SD1.5 + tiny adapter"
        print(f"{label}, {args.frames} frames {args.size}x{args.size}, {args.steps} steps, {args.format}, "
              f"device={device}, runs={args.runs}")  # fmt: skip
        print(f"{'path':<38} {'median s':>9} {'min s':>8}")
        print(f"{'direct diffusers call + export':<38} {direct_s:>9.3f} {min(direct_times):>8.3f}")
        print(f"{'service via Envoy (+encode, S3, result)':<38} {service_s:>9.3f} {min(service_times):>8.3f}")
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
                torch.cuda.reset_peak_memory_stats(device)
                capped = statistics.median(timed(direct) for _ in range(args.runs))
                peak = torch.cuda.max_memory_allocated(device) / 2**30
                print(f"direct under a {args.memory_cap_gib:g} GiB cap: {capped:.3f} s, peak {peak:.2f} GiB")
        print(f"ratio={service_s / direct_s:.3f}")


if __name__ == "__main__":
    main()
