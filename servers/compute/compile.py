"""Opt-in ``torch.compile`` for the torch services: options, fail-soft compiling, the on-disk cache.

Off by default, and off means nothing here runs: callers keep their eager modules untouched (the
same code path, the same bytes for the same seed).

On, modules are compiled in place (``nn.Module.compile``), so their type, attributes and
``state_dict`` keys stay those of the eager module and diffusers' pipelines keep working with
them. Compiling is lazy: the first call compiles, so a server warms its modules up before it says
SERVING and undoes the compile (:func:`uncompile`) when that first call fails; later failures (a
recompile for a new shape) fall back to eager for that graph instead of failing the request
(``torch._dynamo.config.suppress_errors``). Inductor's FX-graph and AOT-autograd caches live under
the server's data folder (:func:`use_compile_cache`), so a restart reuses what the first start built.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
from torch import nn

from genmesh.errors import InvalidArgument

log = structlog.get_logger(__name__)

# "reduce-overhead"/"max-autotune" use CUDA graphs, which the pipelines' per-step Python callbacks
# and changing shapes defeat; max-autotune also took over 10 minutes for SD1.5 on an H100.
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
ORIG_MOD_PREFIX = "_orig_mod."  # what torch.compile's wrapper adds to state_dict keys


@dataclass(frozen=True)
class CompileOptions:
    """Whether and how to compile. ``backend`` is torch.compile's (tests pass a failing one)."""

    enabled: bool = False
    mode: str = "default"
    backend: str | Callable[..., Any] = "inductor"

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise InvalidArgument(
                f"compile_mode: unknown mode {self.mode!r} (allowed: {', '.join(COMPILE_MODES)})", field="compile_mode"
            )


OFF = CompileOptions()


def use_compile_cache(directory: Path) -> Path:
    """Keep inductor's compiled artefacts in ``directory`` (the settings resolved it: flag, then
    ``TORCHINDUCTOR_CACHE_DIR``, then the data folder): the FX-graph cache is keyed on the graph,
    shapes, torch version and device, so a restart with the same model skips code generation.
    Call before the first compile."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Set, not defaulted: torch writes its own default (/tmp/torchinductor_<user>) into the
    # environment of a process that asked for it, and children would inherit that.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def fall_back_to_eager_on_recompile_errors() -> None:
    """A recompile at request time (a new shape) that fails runs that graph eagerly instead of
    failing the job. Process-wide, so only set once compiling was asked for."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True


def prepare_compiling(options: CompileOptions, cache_dir: Path) -> None:
    """Process-wide set-up before the first compile, when ``options`` turn compiling on."""
    if options.enabled:
        use_compile_cache(cache_dir)
        fall_back_to_eager_on_recompile_errors()


def compile_module(module: nn.Module, options: CompileOptions) -> bool:
    """Compile ``module`` in place (lazily: its next call compiles); False when ``options`` is off."""
    if not options.enabled:
        return False
    module.compile(mode=options.mode, backend=options.backend)
    return True


def compiled(module: nn.Module, options: CompileOptions) -> nn.Module:
    """A compiled wrapper of ``module`` sharing its parameters (``module`` itself stays eager; the
    wrapper's ``state_dict`` keys carry ``_orig_mod.``: save ``module``'s, or :func:`eager_state_dict`)."""
    return torch.compile(module, mode=options.mode, backend=options.backend)


def uncompile(module: nn.Module) -> None:
    """Undo :func:`compile_module`: the module runs eagerly again."""
    # nn.Module.compile stores the compiled call here; there is no public way to drop it.
    module._compiled_call_impl = None


def is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def compiled_graphs() -> int:
    """Graphs dynamo compiled in this process so far (a growing number after warm-up means recompiles)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@contextmanager
def logging_request_compiles(options: CompileOptions, **fields: Any) -> Iterator[None]:
    """Log one line when the block compiled new graphs: a request that waited for a compile (a
    shape or batch the warm-up did not cover). Nothing at all when compiling is off."""
    if not options.enabled:
        yield
        return
    before = compiled_graphs()
    yield
    if (graphs := compiled_graphs() - before) > 0:
        log.info("compiled_at_request", graphs=graphs, total_graphs=before + graphs, **fields)


@dataclass(frozen=True)
class WarmUp:
    """How a warm-up went: ``compiled`` False means it failed and the modules run eagerly."""

    compiled: bool
    seconds: float
    graphs: int  # graphs compiled during the warm-up


def warm_up(modules: Iterable[nn.Module], run: Callable[[], object], *, what: str) -> WarmUp:
    """Run ``run`` (calls that reach the compiled ``modules``, compiling them); when it raises,
    log one warning, run the modules eagerly from then on, and carry on: never fail the server."""
    modules = list(modules)
    started, before = time.monotonic(), compiled_graphs()
    try:
        run()
    except Exception as exc:
        for module in modules:
            uncompile(module)
        log.warning("compile_failed_running_eager", what=what, error=short_error(exc))
        return WarmUp(False, time.monotonic() - started, compiled_graphs() - before)
    result = WarmUp(True, time.monotonic() - started, compiled_graphs() - before)
    log.info("compiled", what=what, seconds=round(result.seconds, 3), graphs=result.graphs)
    return result


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception and of its cause, for one log line (compile errors run
    to pages, and dynamo's first line only names the backend)."""

    def first_line(error: BaseException) -> str:
        text = str(error).strip()
        return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__

    cause = getattr(exc, "inner_exception", None) or exc.__cause__
    return first_line(exc) + (f" <- {first_line(cause)}" if cause is not None and cause is not exc else "")


def eager_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s weights under the keys an eager module of the same class loads: a
    ``torch.compile`` wrapper's ``_orig_mod.`` prefix removed."""
    state = module.state_dict()
    return {key.replace(ORIG_MOD_PREFIX, ""): value for key, value in state.items()}
