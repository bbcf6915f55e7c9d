"""Loaded models with a keep-alive: load on first use, unload after an idle time.

Device memory holds one model at a time per cache (a request for another model swaps it). The
worker thread uses a model inside ``with cache.use(name) as model:``; an idle timer unloads it
only when no job holds it. ``keep_alive_seconds <= 0`` keeps models loaded forever.

A request may say how long its model stays (``use(name, keep_alive_seconds=...)``, as Ollama's
``keep_alive``): 0 unloads it as soon as its last user lets go (services sharing one GPU take
turns), a negative value keeps it until another model is needed, a positive one overrides the
idle time for that release.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

import structlog

from servers.runtime import metrics

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)  # what names a model: its name, or (base model, motion adapter)
M = TypeVar("M")


class ModelCache(Generic[K, M]):
    def __init__(
        self,
        load: Callable[[K], M],
        *,
        keep_alive_seconds: float,
        unload: Callable[[M], None] | None = None,
    ) -> None:
        self._load = load
        self._unload = unload
        self.keep_alive_seconds = keep_alive_seconds
        self._lock = threading.RLock()
        self._released = threading.Condition(self._lock)  # signalled when a user lets go
        self._key: K | None = None
        self._model: M | None = None
        self._in_use = 0
        self._last_used = time.monotonic()
        self._timer: threading.Timer | None = None
        self._idle_limit = keep_alive_seconds
        self.last_load_seconds = 0.0

    @property
    def loaded_key(self) -> K | None:
        return self._key

    def is_loaded(self, key: K) -> bool:
        return self._key == key and self._model is not None

    @contextlib.contextmanager
    def use(self, key: K, keep_alive_seconds: float | None = None) -> Iterator[M]:
        """The model ``key`` names, loading it (and unloading another) first if needed;
        ``keep_alive_seconds`` (None: the cache's own) says how long it stays once released."""
        with self._lock:
            self.last_load_seconds = 0.0
            if self._key != key or self._model is None:
                # Another thread may still hold the current model (a preload racing a job): never
                # unload under it.
                self._released.wait_for(lambda: self._in_use == 0)
                self._drop()
                started = time.monotonic()
                self._model = self._load(key)
                self._key = key
                self.last_load_seconds = time.monotonic() - started
                log.info("model_loaded", model=str(key), seconds=round(self.last_load_seconds, 3))
                metrics.model_loaded(self.last_load_seconds)
            self._in_use += 1
            model = self._model
        try:
            yield model
        finally:
            with self._lock:
                self._in_use -= 1
                self._last_used = time.monotonic()
                self._released.notify_all()
                if keep_alive_seconds == 0 and self._in_use == 0:
                    log.info("model_unloaded_on_request", model=str(self._key))
                    self._drop()
                else:
                    self._schedule_unload(self.keep_alive_seconds if keep_alive_seconds is None else keep_alive_seconds)

    def _schedule_unload(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if seconds <= 0:
            return
        self._idle_limit = seconds
        self._timer = threading.Timer(seconds, self._unload_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _unload_if_idle(self) -> None:
        with self._lock:
            idle = time.monotonic() - self._last_used
            if self._in_use == 0 and self._model is not None and idle >= self._idle_limit * 0.99:
                log.info("model_unloaded_idle", model=str(self._key), idle_seconds=round(idle, 1))
                self._drop()

    def _drop(self) -> None:
        if self._model is not None and self._unload is not None:
            self._unload(self._model)
        self._model, self._key = None, None

    def close(self, timeout: float = 30.0) -> None:
        """Unload, after waiting up to ``timeout`` seconds for a job still using the model."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._released.wait_for(lambda: self._in_use == 0, timeout=timeout)
            self._drop()
