"""Recompiles across request shapes for a compiled Image model: warm up as the server does, then
generate at other sizes, batches and schedulers and count the graphs each compiled.

    .venv/bin/python bench/compile_shapes.py                       # tiny model, dynamo only (seconds)
    .venv/bin/python bench/compile_shapes.py --backend inductor    # real kernels (minutes on a CPU)
    .venv/bin/python bench/compile_shapes.py --full-size --backend inductor   # on a GPU

``--backend eager`` traces and guards exactly as inductor does but generates no code, so the graph
counts are the same and it runs in seconds: what to use to check a change for new recompiles.
Prints one line per request (shape, seconds, graphs compiled) and last ``request_compiles=<total
graphs compiled after the warm-up>``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from full_size import build_full_size_sd15  # bench/, beside this script

from servers.compute.compile import CompileOptions, compiled_graphs, prepare_compiling
from servers.compute.devices import configure_threads
from servers.diffusion.builtin import TINY_SD15
from servers.diffusion.compiled import compile_model, parse_shapes, warm_up_image
from servers.diffusion.generate import GenerationParams, generate
from servers.diffusion.loading import load_model
from servers.diffusion.sources import ModelSource

# (width, height, images, scheduler, guidance): sizes the warm-up did not see, a batch, other schedulers
REQUESTS = [
    (512, 512, 1, "euler", 7.5),
    (768, 512, 1, "euler", 7.5),
    (512, 768, 1, "dpmpp_2m", 7.5),
    (640, 448, 1, "ddim", 7.5),
    (256, 256, 1, "euler_a", 7.5),
    (512, 512, 2, "euler", 7.5),
    (768, 384, 3, "euler", 7.5),
    (512, 512, 1, "euler", 1.0),
    (576, 320, 1, "euler", 1.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="eager", choices=("eager", "inductor"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", default="", help="WxH[xN] list as the server's --compile-warmup (default: its)")
    parser.add_argument("--full-size", action="store_true", help="SD1.5-size random weights (for a GPU)")
    args = parser.parse_args()
    configure_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="genmesh-bench-") as tmp:
        data_dir = Path(tmp)
        cache_dir = data_dir / "cache" / "diffusion"
        options = CompileOptions(True, backend=args.backend)
        prepare_compiling(options, data_dir / "cache" / "inductor")
        if args.full_size:
            source = ModelSource.parse(str(build_full_size_sd15(data_dir / "models", cache_dir)))
        else:
            source = ModelSource.parse(f"builtin:{TINY_SD15}")
        model = load_model(source, cache_dir=cache_dir)
        warm = warm_up_image(model, compile_model(model, options), parse_shapes(args.warmup))
        assert warm is not None
        print(f"warm-up ({args.backend}, {model.device}): {warm.seconds:.1f} s, {warm.graphs} graphs, "
              f"compiled={warm.compiled}")  # fmt: skip
        after_warm_up = compiled_graphs()
        for width, height, images, scheduler, guidance in REQUESTS:
            before, started = compiled_graphs(), time.perf_counter()
            params = GenerationParams(
                prompt="a lighthouse", width=width, height=height, steps=args.steps, num_images=images,
                scheduler=scheduler, guidance_scale=guidance, seed=1,
            )  # fmt: skip
            generate(model, params)
            seconds = time.perf_counter() - started
            print(f"{width}x{height} x{images} {scheduler:<9} cfg {guidance:<4} {seconds:7.2f} s  "
                  f"graphs compiled: {compiled_graphs() - before}")  # fmt: skip
        print(f"request_compiles={compiled_graphs() - after_warm_up}")


if __name__ == "__main__":
    main()
