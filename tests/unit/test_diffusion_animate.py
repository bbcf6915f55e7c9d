"""AnimateDiff on the built-in tiny SD1.5 + motion adapter: motion adapters from single files, the
three tasks, context windows, determinism, cancel without decoding, the out-of-memory retry, and
parameter validation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from genmesh.errors import Cancelled, InvalidArgument, ResourceExhausted
from servers.compute.devices import configure_threads
from servers.diffusion import animate as animate_module
from servers.diffusion.animate import VideoParams, animate, resolve_video_params
from servers.diffusion.builtin import build_tiny_motion_adapter
from servers.diffusion.loading import load_model
from servers.diffusion.memory import MemoryMode
from servers.diffusion.motion import MotionVersion, check_fits, detect_motion_version, motion_config_dir
from servers.diffusion.sources import ModelSource
from servers.runtime.events import StageChanged
from tests.support.single_file import save_motion_adapter_single_file

TINY = ModelSource.parse("builtin:tiny-sd15")
ADAPTER = ModelSource.parse("builtin:tiny-motion-adapter")
SMALL = {"width": 64, "height": 64, "steps": 3, "num_frames": 8, "seed": 11}


class Recorder:
    def __init__(self, cancel_after_step: int | None = None) -> None:
        self.steps: list[tuple[int, int]] = []
        self.outputs: list[object] = []
        self.cancel_after_step = cancel_after_step

    def check_cancelled(self) -> None:
        if self.cancel_after_step is not None and len(self.steps) >= self.cancel_after_step:
            raise Cancelled("cancel requested")

    def progress(self, step: int, total_steps: int, preview=None) -> None:
        self.steps.append((step, total_steps))

    def output(self, payload, step=None, total_steps=None) -> None:
        self.outputs.append(payload)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_threads(2)
    return tmp_path_factory.mktemp("diffusion-cache")


@pytest.fixture(scope="module")
def video_model(cache_dir: Path):
    return load_model(TINY, cache_dir=cache_dir, device="cpu", motion_adapter=ADAPTER)


def pixels(frames: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(frame) for frame in frames])


def test_text_to_video_is_deterministic_and_reports_steps_and_decoding(video_model) -> None:
    recorder = Recorder()
    first = animate(video_model, VideoParams("a cat", **SMALL), recorder)
    assert len(first.frames) == 8 and first.frames[0].size == (64, 64)
    assert recorder.steps == [(1, 3), (2, 3), (3, 3)]
    decoding = [item for item in recorder.outputs if isinstance(item, StageChanged) and item.stage == "decoding"]
    assert [item.done for item in decoding] == [0, 2, 4, 6, 8]  # chunks of two frames
    assert first.params.scheduler == "ddim" and first.context_length == 0 and not first.low_memory_retry
    again = animate(video_model, VideoParams("a cat", **SMALL), Recorder())
    assert np.array_equal(pixels(first.frames), pixels(again.frames))
    other = animate(video_model, VideoParams("a cat", **{**SMALL, "seed": 12}), Recorder())
    assert not np.array_equal(pixels(first.frames), pixels(other.frames))


def test_long_clips_use_context_windows_and_leave_the_pipeline_as_it_was(video_model) -> None:
    long = animate(video_model, VideoParams("a cat", **{**SMALL, "num_frames": 17}), Recorder())
    assert len(long.frames) == 17 and (long.context_length, long.context_stride) == (16, 4)
    assert not video_model.pipeline("txt2vid").free_noise_enabled
    plain = animate(video_model, VideoParams("a cat", **SMALL), Recorder())
    reference = animate(video_model, VideoParams("a cat", **SMALL), Recorder())
    assert np.array_equal(pixels(plain.frames), pixels(reference.frames))


def test_image_and_video_to_video(video_model) -> None:
    still = Image.new("RGB", (96, 64), (200, 30, 90))
    from_image = animate(video_model, VideoParams("a cat", steps=5, num_frames=8, seed=1, init_image=still), Recorder())
    assert from_image.params.strength == pytest.approx(0.8) and from_image.frames[0].size == (96, 64)
    assert from_image.steps_run == 4  # 5 steps * 0.8
    clip = [Image.new("RGB", (64, 64), (index * 20, 0, 0)) for index in range(6)]
    from_video = animate(video_model, VideoParams("a cat", steps=4, seed=1, init_video=clip, strength=0.5), Recorder())
    assert len(from_video.frames) == 6 and from_video.steps_run == 2


def test_cancel_stops_within_a_step_and_decodes_nothing(video_model) -> None:
    recorder = Recorder(cancel_after_step=2)
    with pytest.raises(Cancelled):
        animate(video_model, VideoParams("a cat", **{**SMALL, "steps": 20}), recorder)
    assert len(recorder.steps) == 2
    assert not [item for item in recorder.outputs if isinstance(item, StageChanged) and item.stage == "decoding"]
    assert len(animate(video_model, VideoParams("a cat", **SMALL), Recorder()).frames) == 8  # still usable


def test_out_of_memory_is_retried_once_in_low_memory_then_resource_exhausted(video_model, monkeypatch) -> None:
    real_run = animate_module._run
    calls: list[bool] = []

    def run_that_fails_unless_low(model, params, reporter, *, decode_chunk_size, low):
        calls.append(low)
        if not low:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(model, params, reporter, decode_chunk_size=decode_chunk_size, low=low)

    monkeypatch.setattr(animate_module, "_run", run_that_fails_unless_low)
    output = animate(video_model, VideoParams("a cat", **SMALL), Recorder())
    assert calls == [False, True] and output.low_memory_retry and output.decode_chunk_size == 1

    def always_out_of_memory(model, params, reporter, *, decode_chunk_size, low):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(animate_module, "_run", always_out_of_memory)
    with pytest.raises(ResourceExhausted, match="num_frames"):
        animate(video_model, VideoParams("a cat", **SMALL), Recorder())


def test_low_memory_configuration_gives_the_same_frames(video_model) -> None:
    params = resolve_video_params(VideoParams("a cat", **{**SMALL, "num_frames": 17}))
    low = animate_module._run(video_model, params, Recorder(), decode_chunk_size=2, low=True)
    full = animate_module._run(video_model, params, Recorder(), decode_chunk_size=2, low=False)
    # Chunked and split kernels round differently in the last bits: the same frames, not the same bytes.
    assert np.abs(pixels(low.frames).astype(int) - pixels(full.frames).astype(int)).max() <= 3
    assert low.decode_chunk_size == 1
    assert video_model.memory_mode is MemoryMode.FULL


def test_single_file_motion_adapter_gives_the_same_frames(cache_dir: Path, tmp_path: Path, video_model) -> None:
    adapter = build_tiny_motion_adapter()
    path = save_motion_adapter_single_file(adapter, tmp_path / "mm_tiny.ckpt")
    assert detect_motion_version(path) is MotionVersion.V2  # the tiny adapter has a motion mid block
    config = tmp_path / "config"
    adapter.save_config(str(config))
    source = ModelSource.parse(str(path), config_dir=config)
    from_file = load_model(TINY, cache_dir=cache_dir, device="cpu", motion_adapter=source)
    expected = animate(video_model, VideoParams("a cat", **SMALL), Recorder())
    got = animate(from_file, VideoParams("a cat", **SMALL), Recorder())
    assert np.array_equal(pixels(expected.frames), pixels(got.frames))


def test_bundled_motion_configs_and_fit_checks(tmp_path: Path) -> None:
    for version in MotionVersion:
        assert (motion_config_dir(version) / "config.json").is_file()
    adapter = build_tiny_motion_adapter()
    sdxl_unet = {"block_out_channels": [320, 640, 1280], "addition_embed_type": "text_time"}
    with pytest.raises(InvalidArgument) as caught:
        check_fits(adapter, _Config(sdxl_unet), adapter_name="mm", model_name="sdxl-base")
    assert caught.value.field == "motion_adapter" and "sdxl-base" in caught.value.message
    not_a_motion_module = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(not_a_motion_module))
    with pytest.raises(InvalidArgument, match="not an AnimateDiff motion module"):
        detect_motion_version(not_a_motion_module)


class _Config(SimpleNamespace):
    def __init__(self, values: dict) -> None:
        super().__init__(**values)
        self._values = values

    def get(self, key: str, default=None):
        return self._values.get(key, default)


def test_resolving_only_fills_defaults() -> None:
    """Limits are checked at admission (servers.diffusion.params); resolving fills what is unset."""
    plain = resolve_video_params(VideoParams("a cat", seed=1))
    assert (plain.width, plain.height, plain.num_frames, plain.scheduler, plain.strength) == (
        512,
        512,
        16,
        "ddim",
        None,
    )
    still = resolve_video_params(VideoParams("a cat", init_image=Image.new("RGB", (100, 60))))
    assert (still.width, still.height, still.strength) == (96, 64, 0.8)  # the input's size, snapped; min 64
    clip = resolve_video_params(VideoParams("a cat", init_video=[Image.new("RGB", (64, 64))] * 70))
    assert (clip.num_frames, clip.strength) == (64, 0.6)
