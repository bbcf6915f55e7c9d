"""The Trainer's opt-in compile and channels-last (servers.training.model.trainer): results within
rounding of the eager run, checkpoints that load into an eager model, eager fallback when the
compile fails. Dynamo runs with its ``eager`` backend here (tracing, no code generation: seconds on
the CPU); inductor's CPU compile of a training step takes minutes on two shared cores."""

from __future__ import annotations

import dataclasses
import math

import pytest
import structlog
import torch

from servers.compute.compile import CompileOptions
from servers.training.model import TrainConfig, Trainer, build_model, load_restoration_model
from servers.training.model import trainer as trainer_module
from servers.training.model.checkpoint import read_file


def make_pairs(count: int, size: int, seed: int, noise: float = 0.1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, size // 8 + 1, size // 8 + 1, generator=g)
    clean = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    clean = clean.clamp(0, 1)
    degraded = (clean + noise * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return list(zip(degraded, clean, strict=True))


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def data():
    pairs = make_pairs(10, 48, seed=0)
    return pairs[:8], pairs[8:]


def config(**changes) -> TrainConfig:
    base = TrainConfig(
        epochs=2, batch_size=4, learning_rate=5e-3, patch_size=32, seed=7, architecture="tiny", device="cpu"
    )
    return dataclasses.replace(base, **changes)


def with_backend(monkeypatch, backend) -> None:
    """Make the Trainer's compile use ``backend`` (inductor would take minutes here)."""
    real = trainer_module.compiled
    monkeypatch.setattr(
        trainer_module, "compiled", lambda module, options: real(module, CompileOptions(True, backend=backend))
    )


def train(cfg: TrainConfig, data) -> Trainer:
    trainer = Trainer(cfg, *data)
    trainer.run()
    return trainer


def test_off_trains_the_eager_model_itself(data) -> None:
    trainer = Trainer(config(), *data)
    assert trainer._step_module is trainer.model


def test_compiled_training_matches_eager_and_saves_eager_keys(data, monkeypatch) -> None:
    eager = train(config(), data)
    with_backend(monkeypatch, "eager")
    fast = train(config(compile=True, channels_last=True), data)
    assert fast._step_module is not fast.model  # the compiled wrapper ran the steps
    for a, b in zip(eager.history, fast.history, strict=True):
        assert math.isclose(a.train_loss, b.train_loss, rel_tol=1e-3)
        assert math.isclose(a.validation.psnr, b.validation.psnr, abs_tol=0.05)
    # Checkpoints and model files hold the eager module's keys: they load into an eager model.
    state = read_file(fast.checkpoint_bytes(), "genmesh.training.checkpoint/1", field="checkpoint")
    assert not any("_orig_mod" in key for key in state["model"])
    build_model("tiny").load_state_dict(state["model"], strict=True)
    loaded = load_restoration_model(fast.best_model_bytes())
    assert loaded.architecture == "tiny"
    # and a compiled job resumes eagerly (compile is one of the changes a resume may make)
    resumed = Trainer.resume(fast.checkpoint_bytes(), *data, epochs=3, compile=False, channels_last=False)
    assert resumed._step_module is resumed.model and resumed.epoch == 2


def test_a_failing_compile_trains_eagerly_with_one_warning(data, monkeypatch) -> None:
    def failing_backend(graph_module, example_inputs):
        raise RuntimeError("no compiler here")

    eager = train(config(), data)
    with_backend(monkeypatch, failing_backend)
    with structlog.testing.capture_logs() as logs:
        fallback = train(config(compile=True), data)
    warnings = [entry for entry in logs if entry["event"] == "compile_failed_running_eager"]
    assert len(warnings) == 1 and "no compiler here" in warnings[0]["error"]
    assert fallback._step_module is fallback.model
    # The failed first step was redone eagerly: the same job, bit for bit.
    assert [r.train_loss for r in fallback.history] == [r.train_loss for r in eager.history]
    assert all(torch.equal(a, b) for a, b in zip(eager.model.state_dict().values(),
                                                 fallback.model.state_dict().values(), strict=True))  # fmt: skip
