"""The opt-in compile setting (servers.compute.compile, servers.diffusion.compiled): parsing, off is
the identity, a failed compile falls back to eager, warm-up through the real generation path.

Inductor itself is exercised by tests/integration/test_compile_gateway.py (a CPU compile of the
tiny UNet takes minutes on two shared cores); here dynamo runs with its ``eager`` backend
(tracing and guards, no code generation) or with a backend that fails, in seconds.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import structlog
import torch
from torch import nn

from genmesh.errors import InvalidArgument
from servers.compute.compile import (
    OFF,
    CompileOptions,
    compile_module,
    compiled,
    compiled_graphs,
    eager_state_dict,
    is_compiled,
    use_compile_cache,
    warm_up,
)
from servers.compute.devices import configure_threads
from servers.diffusion.compiled import Shape, compile_model, parse_shapes, second_shape, warm_up_image, warm_up_video
from servers.diffusion.generate import GenerationParams, generate
from servers.diffusion.loading import load_model
from servers.diffusion.sources import ModelSource
from servers.image.settings import ImageSettings
from servers.runtime.settings import parse_settings
from servers.training.settings import TrainingSettings
from servers.video.settings import VideoSettings


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("no compiler here\nsecond line of a long report")


FAILING = CompileOptions(True, backend=failing_backend)
TRACE_ONLY = CompileOptions(True, backend="eager")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ImageSettings, VideoSettings, TrainingSettings])
def test_compile_is_off_unless_asked(cls, tmp_path: Path) -> None:
    settings = parse_settings(cls, [], environ={"GENMESH_DATA_DIR": str(tmp_path)})
    assert settings.compile is False and settings.compile_mode == "default"
    assert settings.resolved_compile_cache_dir() == tmp_path / "cache" / "inductor"
    on = parse_settings(cls, ["--compile"], environ={})
    assert on.compile is True
    from_env = parse_settings(
        cls, [], environ={"GENMESH_COMPILE": "1", "GENMESH_COMPILE_MODE": "max-autotune-no-cudagraphs",
                          "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "kernels")},
    )  # fmt: skip
    assert from_env.compile is True and from_env.compile_mode == "max-autotune-no-cudagraphs"
    assert from_env.resolved_compile_cache_dir() == tmp_path / "kernels"
    assert parse_settings(cls, ["--no-compile"], environ={"GENMESH_COMPILE": "1"}).compile is False


def test_compile_options_name_the_bad_mode() -> None:
    assert OFF.enabled is False
    with pytest.raises(InvalidArgument, match=r"compile_mode.*reduce-overhead"):
        CompileOptions(True, mode="reduce-overhead")


def test_warm_up_shapes_parse_and_name_the_field() -> None:
    assert parse_shapes("") == ()
    assert parse_shapes("512x512, 768x512x2") == (Shape(512, 512, 1), Shape(768, 512, 2))
    assert parse_shapes("512x512", default_count=16) == (Shape(512, 512, 16),)
    for bad in ("512", "512x", "axb", "500x512", "512x512x0", "1x2x3x4"):
        with pytest.raises(InvalidArgument, match="compile_warmup"):
            parse_shapes(bad)
    assert second_shape(Shape(512, 512, 1), vary_count=False) == Shape(384, 320, 1)
    assert second_shape(Shape(512, 512, 16), vary_count=True) == Shape(384, 320, 8)


def test_compile_cache_goes_where_the_settings_say(tmp_path: Path, monkeypatch) -> None:
    for name in ("TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_inherited")  # torch's own default
    assert use_compile_cache(tmp_path / "inductor") == tmp_path / "inductor"
    assert (tmp_path / "inductor").is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"


# --- the generic wrapper --------------------------------------------------------------------------


class SmallNet(nn.Module):
    # Its own class: nn.Module.compile compiles the module's forward frame, and dynamo skips
    # torch.nn's own files (an nn.Sequential would run eagerly without a word).
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return SmallNet()


def test_off_leaves_the_module_alone() -> None:
    net = small_net()
    assert compile_module(net, OFF) is False
    assert not is_compiled(net)


def test_a_failing_compile_warns_once_and_runs_eagerly() -> None:
    net, x = small_net(), torch.rand(2, 3, 16, 16)
    expected = net(x)
    assert compile_module(net, FAILING) and is_compiled(net)
    with structlog.testing.capture_logs() as logs:
        result = warm_up([net], lambda: net(x), what="a test net")
    assert result.compiled is False
    assert not is_compiled(net)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["event"] == "compile_failed_running_eager"
    assert "no compiler here" in warnings[0]["error"] and "second line" not in warnings[0]["error"]
    assert torch.equal(net(x), expected)


def test_compiled_state_dict_loads_into_an_eager_model() -> None:
    net = small_net()
    wrapper = compiled(net, TRACE_ONLY)
    wrapper(torch.rand(1, 3, 8, 8))
    assert all(key.startswith("_orig_mod.") for key in wrapper.state_dict())
    eager = SmallNet()
    eager.load_state_dict(eager_state_dict(wrapper), strict=True)
    buffer = io.BytesIO()
    torch.save(eager_state_dict(wrapper), buffer)
    buffer.seek(0)
    assert eager_state_dict(wrapper).keys() == torch.load(buffer, weights_only=True).keys() == net.state_dict().keys()


# --- diffusion: what is compiled, warm-up through generate ----------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    configure_threads(int(os.environ.get("GENMESH_THREADS", "2")))
    cache = tmp_path_factory.getbasetemp() / "diffusion-cache"
    return load_model(ModelSource.parse("builtin:tiny-sd15"), cache_dir=cache, device="cpu")


def png(params: GenerationParams, model) -> bytes:
    buffer = io.BytesIO()
    generate(model, params).images[0].save(buffer, format="PNG")
    return buffer.getvalue()


PARAMS = GenerationParams(prompt="a lighthouse", width=64, height=64, steps=3, seed=5, scheduler="euler")


def test_off_compiles_nothing(tiny) -> None:
    assert compile_model(tiny, OFF) == []
    pipe = tiny.pipeline()
    assert not is_compiled(pipe.unet) and not is_compiled(pipe.vae.decoder)
    assert warm_up_image(tiny, []) is None


def test_image_warm_up_compiles_the_denoiser_and_decoder_and_keeps_the_pixels(tiny) -> None:
    eager = png(PARAMS, tiny)
    modules = compile_model(tiny, TRACE_ONLY)
    pipe = tiny.pipeline()
    try:
        assert modules == [pipe.unet, pipe.vae.decoder] and all(map(is_compiled, modules))
        result = warm_up_image(tiny, modules, (Shape(64, 64, 1),))
        assert result is not None and result.compiled and result.graphs >= 2
        before = compiled_graphs()
        assert png(PARAMS, tiny) == eager  # dynamo's eager backend: the same kernels, the same bytes
        assert compiled_graphs() == before  # the warmed-up shape: no compile at request time
    finally:
        for module in modules:
            module._compiled_call_impl = None


def test_image_warm_up_that_fails_leaves_an_eager_model(tiny) -> None:
    eager = png(PARAMS, tiny)
    modules = compile_model(tiny, FAILING)
    result = warm_up_image(tiny, modules, (Shape(64, 64, 1),))
    assert result is not None and result.compiled is False
    assert not any(map(is_compiled, modules))
    assert png(PARAMS, tiny) == eager


@pytest.mark.slow  # dynamo traces the motion UNet: about a minute on two shared cores
def test_video_warm_up_compiles_the_motion_unet_and_decoder_and_keeps_the_frames(tmp_path_factory) -> None:
    from servers.diffusion.animate import VideoParams, animate
    from servers.runtime.events import NULL_REPORTER

    cache = tmp_path_factory.getbasetemp() / "diffusion-cache"
    video = load_model(
        ModelSource.parse("builtin:tiny-sd15"), cache_dir=cache, device="cpu",
        motion_adapter=ModelSource.parse("builtin:tiny-motion-adapter"),
    )  # fmt: skip
    params = VideoParams(prompt="waves", width=64, height=64, num_frames=4, steps=2, seed=3)

    def frames() -> list[bytes]:
        return [frame.tobytes() for frame in animate(video, params, NULL_REPORTER, decode_chunk_size=2).frames]

    eager = frames()
    modules = compile_model(video, TRACE_ONLY)
    assert modules == [video.pipeline(video.root_task).unet, video.pipeline(video.root_task).vae.decoder]
    result = warm_up_video(video, modules, (Shape(64, 64, 4),), decode_chunk_size=2)
    assert result is not None and result.compiled and result.graphs >= 2
    before = compiled_graphs()
    assert frames() == eager
    assert compiled_graphs() == before
