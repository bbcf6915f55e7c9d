"""ModelCache: load on first use, swap on another name, unload after the keep-alive when idle."""

from __future__ import annotations

import time

from servers.runtime.model_cache import ModelCache


def test_load_once_swap_and_idle_unload() -> None:
    loads, unloads = [], []
    cache = ModelCache(
        lambda name: loads.append(name) or f"model:{name}", keep_alive_seconds=0.2, unload=unloads.append
    )
    with cache.use("a") as model:
        assert model == "model:a"
    with cache.use("a"):
        pass
    assert loads == ["a"] and cache.is_loaded("a")
    with cache.use("b"):
        assert unloads == ["model:a"]
    deadline = time.monotonic() + 5
    while cache.loaded_key is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cache.loaded_key is None and unloads == ["model:a", "model:b"]
    cache.close()


def test_model_in_use_is_not_unloaded() -> None:
    cache = ModelCache(lambda name: name, keep_alive_seconds=0.05)
    with cache.use("a"):
        cache._unload_if_idle()
        assert cache.is_loaded("a")
        time.sleep(0.1)
        assert cache.is_loaded("a")
    cache.close()


def test_keep_alive_zero_keeps_models() -> None:
    cache = ModelCache(lambda name: name, keep_alive_seconds=0)
    with cache.use("a"):
        pass
    time.sleep(0.05)
    assert cache.is_loaded("a")


def test_swap_waits_until_the_current_model_is_released() -> None:
    import threading

    cache = ModelCache(lambda name: name, keep_alive_seconds=0)
    order = []
    holding = threading.Event()

    def holder() -> None:
        with cache.use("a"):
            holding.set()
            time.sleep(0.2)
            order.append("released a")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait()
    with cache.use("b"):
        order.append("loaded b")
    thread.join()
    assert order == ["released a", "loaded b"]


def test_a_request_can_unload_at_once_keep_forever_or_set_its_own_idle_time() -> None:
    unloads: list[str] = []
    cache = ModelCache(lambda name: name, keep_alive_seconds=600, unload=unloads.append)
    with cache.use("a", keep_alive_seconds=0):
        assert cache.is_loaded("a")
    assert unloads == ["a"] and cache.loaded_key is None  # 0: gone as soon as the job let go
    with cache.use("b", keep_alive_seconds=-1):
        pass
    assert cache._timer is None and cache.is_loaded("b")  # -1: no idle timer at all
    with cache.use("b", keep_alive_seconds=0.05):
        pass
    deadline = time.monotonic() + 5
    while cache.loaded_key is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert unloads == ["a", "b"]
    cache.close()


def test_unload_on_request_waits_for_other_users() -> None:
    import threading

    unloads: list[str] = []
    cache = ModelCache(lambda name: name, keep_alive_seconds=0, unload=unloads.append)
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with cache.use("a"):
            holding.set()
            release.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait()
    with cache.use("a", keep_alive_seconds=0):
        pass
    assert unloads == [] and cache.is_loaded("a")  # another job still holds it
    release.set()
    thread.join()
    cache.close()
