"""LoRA switching: what a request pays to change the active LoRAs on a loaded model (never a reload).

    .venv/bin/python bench/lora_switch.py [--size 64] [--steps 4] [--runs 10] [--threads 2]
    .venv/bin/python bench/lora_switch.py --full-size --size 512 --steps 25      # on a GPU
    .venv/bin/python bench/lora_switch.py --compile                              # compiled UNet + VAE decoder

Two LoRAs (rank 4 on every attention projection of the UNet and text encoder, written by
``tests.support.lora``) on the built-in tiny SD1.5-shaped model, or with ``--full-size`` on SD1.5-size
random weights. Reports, in milliseconds (medians of ``--runs``): the base model's load; the first use
of a LoRA (file read + PEFT injection, once per LoRA); a switch between loaded LoRAs (``set_adapters``)
and back to none (``disable_lora``); one generation without LoRAs and with two active (the unfused
adapters' per-step cost). With ``--compile`` it also counts dynamo compiles: after the warm-up, for
the first generation with a LoRA loaded, and for later switches (weights and sets).
Last line: ``switch_ms=<median switch> generate_ms=<median generation without LoRA>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from full_size import SD15_NAME, build_full_size_sd15  # bench/, beside this script

from servers.compute.compile import CompileOptions
from servers.compute.devices import configure_threads
from servers.diffusion import lora as lora_module
from servers.diffusion.compiled import Shape, compile_model, warm_up_image
from servers.diffusion.generate import GenerationParams, generate
from servers.diffusion.loading import load_model
from servers.diffusion.lora import LoraAdapters, LoraCatalog, LoraRequest
from servers.diffusion.sources import ModelSource
from tests.support.lora import write_pair


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f}"


def timed(run) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def compiles() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-size", action="store_true", help="SD1.5-size random weights (for a GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE decoder first")
    parser.add_argument(
        "--backend", default="inductor", help="compile backend; 'eager' counts dynamo's (re)compiles without codegen"
    )
    parser.add_argument(
        "--diffusers-set-adapters", action="store_true", help="switch with diffusers' set_adapters (float scalings)"
    )
    args = parser.parse_args()
    configure_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="genmesh-lora-bench-"))
    cache = work / "cache"
    source = ModelSource.parse("builtin:tiny-sd15")
    if args.full_size:
        source = ModelSource.parse(str(build_full_size_sd15(work / "models", cache)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    model = load_model(source, cache_dir=cache, device=device, memory_mode="full")
    load = time.perf_counter() - started
    model.loras = LoraAdapters()
    pipe = model.pipeline()
    write_pair(pipe, work / "lora", "a", seed=1)
    write_pair(pipe, work / "lora", "b", seed=2)
    catalog = LoraCatalog(work / "lora")

    def resolved(*pairs: tuple[str, float]):
        return catalog.resolve([LoraRequest(name, weight) for name, weight in pairs], model.family)

    def params(*pairs: tuple[str, float]) -> GenerationParams:
        return GenerationParams(prompt="a lighthouse", width=args.size, height=args.size, steps=args.steps, seed=1,
                                scheduler="euler", loras=resolved(*pairs))  # fmt: skip

    if args.diffusers_set_adapters:  # the library's switch, for comparison
        lora_module._set_adapters = lambda pipe, wanted: pipe.set_adapters(
            [name for name, _ in wanted], adapter_weights=[weight for _, weight in wanted]
        )
    before_compile = 0
    if args.compile:
        modules = compile_model(model, CompileOptions(True, backend=args.backend))
        warm_up_image(model, modules, (Shape(args.size, args.size, 1),))
        before_compile = compiles()
    generate(model, params())  # warm
    plain = [timed(lambda: generate(model, params())) for _ in range(args.runs)]
    first_a = timed(lambda: model.loras.activate(pipe, resolved(("a", 1.0))))
    first_b = timed(lambda: model.loras.activate(pipe, resolved(("b", 1.0))))
    after_loads = compiles()
    generate(model, params(("a", 0.8), ("b", 0.5)))
    after_first_lora_run = compiles()
    sets = [(("a", 1.0),), (("b", 0.5),), (("a", 0.7), ("b", 0.3)), ()]
    switches = []
    for _ in range(args.runs):
        for pairs in sets:
            switches.append(timed(lambda pairs=pairs: model.loras.activate(pipe, resolved(*pairs))))
    with_two = []
    for index in range(args.runs):
        weights = (("a", 0.6 + 0.01 * index), ("b", 0.4))  # a new weight each run: a switch every time
        with_two.append(timed(lambda weights=weights: generate(model, params(*weights))))
    after_switches = compiles()
    print(f"device {device}, size {args.size}, steps {args.steps}, threads {args.threads}, "
          f"model {SD15_NAME if args.full_size else 'tiny-sd15'}, "
          f"compile {args.backend if args.compile else 'off'}")  # fmt: skip
    print(f"{'base model load':42}{ms(load)} ms (once; never repeated for a LoRA)")
    print(f"{'first use of LoRA a / b (read + inject)':42}{ms(first_a)} / {ms(first_b).strip()} ms")
    print(f"{'switch between loaded LoRAs (median)':42}{ms(statistics.median(switches))} ms  "
          f"(max {ms(max(switches)).strip()})")  # fmt: skip
    print(f"{'generate, no LoRA (median)':42}{ms(statistics.median(plain))} ms")
    print(f"{'generate, two LoRAs, new weights (median)':42}{ms(statistics.median(with_two))} ms")
    print(f"adapter loads: {model.loras.loads}")
    if args.compile:
        print(f"dynamo graphs: warm-up {before_compile}, after loading LoRAs {after_loads}, after the first "
              f"run with LoRAs {after_first_lora_run}, after {len(switches) + len(with_two)} switches "
              f"{after_switches}")  # fmt: skip
    print(f"switch_ms={statistics.median(switches) * 1000:.2f} generate_ms={statistics.median(plain) * 1000:.2f}")


if __name__ == "__main__":
    main()
