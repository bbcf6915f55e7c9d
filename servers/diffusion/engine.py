"""What the Image and Video engines share: a device, one loaded model at a time (a ``ModelCache``
keyed by what names the model), LoRAs, compilation, a pixel budget. Nothing about grpc or storage."""

from __future__ import annotations

import abc
import contextlib
import secrets
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from servers.compute.compile import OFF, CompileOptions
from servers.compute.devices import configure_threads, device_label, select_device
from servers.compute.memory import free_device_memory
from servers.diffusion.catalog import CatalogEntry, ModelCatalog
from servers.diffusion.compiled import Shape
from servers.diffusion.loading import LoadedModel, load_model
from servers.diffusion.lora import DEFAULT_BUDGET_BYTES, LoraAdapters, LoraCatalog
from servers.diffusion.params import Defaults
from servers.diffusion.request import DiffusionRequest
from servers.diffusion.sources import ModelSource
from servers.runtime.events import Reporter, StageChanged
from servers.runtime.model_cache import ModelCache

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Loaded:
    """How a job's model was loaded, for its result."""

    memory_mode: str
    device: str
    load_seconds: float  # 0 when it was loaded already


class DiffusionEngine(abc.ABC, Generic[K]):
    """One model (or model pair) loaded per device, unloaded after ``keep_alive_seconds`` idle."""

    DEFAULT_MAX_PIXELS: int

    def __init__(
        self,
        catalog: ModelCatalog,
        *,
        cache_dir: Path,
        device: str = "auto",
        memory_mode: str = "auto",
        keep_alive_seconds: float = 600.0,
        threads: int = 2,
        max_pixels: int | None = None,
        compile: CompileOptions = OFF,
        compile_warmup: tuple[Shape, ...] = (),
        loras: LoraCatalog | None = None,
        lora_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        configure_threads(threads)
        self.catalog = catalog
        self.loras = loras or LoraCatalog(catalog.models_dir.parent / "lora")
        self.lora_budget_bytes = lora_budget_bytes
        self.cache_dir = cache_dir
        self.device = select_device(device)
        self.memory_mode = memory_mode
        self.max_pixels = self.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self.compile = compile
        self.compile_warmup = compile_warmup
        self.models: ModelCache[K, LoadedModel] = ModelCache(
            self._load, keep_alive_seconds=keep_alive_seconds, unload=self._unload
        )

    @property
    def device_label(self) -> str:
        return device_label(self.device)

    @abc.abstractmethod
    def _load(self, key: K) -> LoadedModel:
        """The model ``key`` names, loaded (the cache calls this)."""

    def load_entry(self, entry: CatalogEntry, motion_adapter: ModelSource | None = None) -> LoadedModel:
        """A catalog entry loaded on this engine's device, in its memory mode, with room for LoRAs."""
        model = load_model(
            entry.source, cache_dir=self.cache_dir, device=self.device, memory_mode=self.memory_mode,
            motion_adapter=motion_adapter,
        )  # fmt: skip
        model.loras = LoraAdapters(self.lora_budget_bytes)
        return model

    def _unload(self, model: LoadedModel) -> None:
        del model
        free_device_memory(self.device)

    @contextlib.contextmanager
    def using(self, key: K, keep_alive_seconds: int | None, reporter: Reporter) -> Iterator[tuple[LoadedModel, Loaded]]:
        """The model for one job (the ``loading_model`` stage first when it must be loaded), released
        with the job's keep-alive."""
        if not self.models.is_loaded(key):
            reporter.output(StageChanged("loading_model"))
        with self.models.use(key, keep_alive_seconds) as model:
            loaded = Loaded(str(model.memory_mode), device_label(model.device), self.models.last_load_seconds)
            yield model, loaded

    @staticmethod
    def sampling(request: DiffusionRequest, defaults: Defaults) -> dict[str, Any]:
        """The run parameters (``SamplingParams``) every request fills alike: prompts, scheduler,
        strength, previews; unset steps and guidance from ``defaults``, an unset seed drawn at random."""
        return {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "steps": request.steps or defaults.steps,
            "guidance_scale": defaults.guidance_scale if request.guidance_scale is None else request.guidance_scale,
            "seed": request.seed if request.seed is not None else secrets.randbits(32),
            "scheduler": request.scheduler,
            "strength": request.strength,
            "preview_every": request.preview_interval_steps,
        }

    def close(self) -> None:
        self.models.close()
