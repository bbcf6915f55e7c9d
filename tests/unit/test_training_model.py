"""The training engine's network, metrics and tiled restore (servers.training.model), on the CPU.

Trainer, checkpoint and resume tests are in test_training_model_trainer.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genmesh.errors import Cancelled, InvalidArgument
from servers.training.model import metrics
from servers.training.model.restormer import (
    ARCHITECTURES,
    GDFN,
    MDTA,
    Restormer,
    RestormerConfig,
    build_model,
    count_parameters,
)
from servers.training.model.tiling import count_tiles, restore_image, tile_starts


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def smooth_images(generator: torch.Generator, n: int, size: int) -> torch.Tensor:
    coarse = torch.rand(n, 3, size // 8 + 1, size // 8 + 1, generator=generator)
    return nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


# --- network --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("tiny", 10_000, 100_000), ("small", 800_000, 1_500_000), ("base", 25_900_000, 26_300_000)],
)
def test_preset_parameter_counts(name, low, high):
    with torch.device("meta"):
        model = build_model(name)
    assert low <= count_parameters(model) < high


def test_base_is_the_paper_configuration():
    config = ARCHITECTURES["base"]
    assert (config.width, config.blocks, config.heads, config.refinement_blocks) == (48, (4, 6, 6, 8), (1, 2, 4, 8), 4)
    assert config.ffn_expansion == 2.66
    with torch.device("meta"):
        model = build_model("base")
    assert count_parameters(model) == 26_126_644  # the paper reports 26.13 M


def test_unknown_architecture_names_the_presets():
    with pytest.raises(InvalidArgument) as caught:
        build_model("huge")
    assert caught.value.field == "architecture"
    assert "tiny" in str(caught.value) and "base" in str(caught.value)


def test_heads_must_divide_channels():
    with pytest.raises(InvalidArgument) as caught:
        RestormerConfig(width=6, heads=(4, 1, 1, 1))
    assert caught.value.field == "heads"


def test_config_round_trips_as_plain_data():
    config = ARCHITECTURES["small"]
    assert RestormerConfig.from_dict(config.to_dict()) == config


def test_mdta_attends_across_channels_with_a_temperature_per_head():
    torch.manual_seed(0)
    attention = MDTA(channels=8, heads=2, bias=False)
    assert attention.temperature.shape == (2, 1, 1)
    assert attention.qkv_dwconv.groups == 24  # depthwise 3x3 over q, k and v
    x = torch.randn(1, 8, 16, 16)
    assert attention(x).shape == x.shape
    # The attention map is (channels/heads)^2 per head whatever the size: a larger image works.
    assert attention(torch.randn(1, 8, 64, 48)).shape == (1, 8, 64, 48)


def test_gdfn_hidden_width_follows_the_expansion_factor():
    ffn = GDFN(channels=48, expansion=2.66, bias=False)
    assert ffn.project_in.out_channels == 2 * int(48 * 2.66)
    assert ffn.project_out.in_channels == int(48 * 2.66)


@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (2, 3, 8, 8), (1, 3, 5, 9), (1, 3, 64, 40)])
def test_any_size_keeps_its_shape(shape):
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    x = torch.rand(shape)
    with torch.no_grad():
        assert model(x).shape == shape


def test_untrained_network_is_the_identity_and_trained_one_is_not():
    torch.manual_seed(0)
    model = build_model("tiny")
    x = torch.rand(1, 3, 30, 45)
    with torch.no_grad():
        assert torch.allclose(model(x), x, atol=1e-6)
        nn.init.normal_(model.output.weight, std=0.1)
        assert not torch.allclose(model(x), x, atol=1e-3)


def test_bias_free_layer_norm_variant_runs():
    torch.manual_seed(0)
    config = RestormerConfig(
        width=4, blocks=(1, 1, 1, 1), heads=(1, 1, 2, 2), refinement_blocks=0, layer_norm="bias_free"
    )
    model = Restormer(config)
    assert model.encoder1[0].norm1.bias is None
    out = model(torch.rand(1, 3, 16, 16))
    out.mean().backward()
    assert model.encoder1[0].norm1.weight.grad is not None


# --- metrics --------------------------------------------------------------------------------


def test_identical_images_score_perfectly():
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    assert metrics.psnr(x, x) == 100.0
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert metrics.accuracy(x, x) == 1.0
    assert metrics.quality(x, x) == metrics.Quality(100.0, pytest.approx(1.0, abs=1e-6), 1.0)


def test_psnr_of_a_known_error():
    a = torch.full((1, 3, 16, 16), 0.5)
    assert metrics.psnr(a + 0.1, a) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert metrics.psnr(a + 0.01, a) == pytest.approx(40.0, abs=1e-3)


def test_psnr_averages_per_image_values():
    a = torch.full((2, 3, 8, 8), 0.5)
    b = a.clone()
    b[0] += 0.1
    b[1] += 0.01
    assert metrics.psnr_per_image(b, a).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)
    assert metrics.psnr(b, a) == pytest.approx(30.0, abs=1e-3)


def test_accuracy_needs_every_channel_within_tolerance():
    a = torch.full((1, 3, 10, 10), 0.5)
    b = a.clone()
    b[0, :, :5] += 0.015  # half the rows: within 0.02 on every channel
    b[0, 1, 5:] += 0.03  # the other half: one channel off
    assert metrics.accuracy(b, a) == pytest.approx(0.5)
    assert metrics.accuracy(b, a, tolerance=0.05) == 1.0
    assert metrics.accuracy(a + 5 / 255, a) == 1.0  # 5/255 counts as within 0.02


def test_gaussian_noise_metrics_are_in_the_expected_range():
    g = torch.Generator().manual_seed(2)
    clean = smooth_images(g, 2, 64)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    assert 19.5 < metrics.psnr(noisy, clean) < 21.0
    assert 0.2 < metrics.ssim(noisy, clean) < 0.8
    assert metrics.accuracy(noisy, clean) < 0.05


def test_ssim_matches_scikit_image():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(3)
    clean = smooth_images(g, 2, 48)[:, :, :, :41]
    for noise in (0.02, 0.1, 0.3):
        noisy = (clean + noise * torch.randn(clean.shape, generator=g)).clamp(0, 1)
        expected = [
            skimage_metrics.structural_similarity(
                noisy[i].permute(1, 2, 0).double().numpy(),
                clean[i].permute(1, 2, 0).double().numpy(),
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=-1,
            )
            for i in range(2)
        ]
        assert metrics.ssim_per_image(noisy, clean).tolist() == pytest.approx(expected, abs=1e-3)
        assert metrics.ssim(noisy, clean) == pytest.approx(sum(expected) / 2, abs=1e-3)


def test_ssim_of_images_smaller_than_the_window():
    x = torch.rand(1, 3, 6, 9, generator=torch.Generator().manual_seed(4))
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert -1.0 <= metrics.ssim(x, 1 - x) < 0.5


def test_metrics_accept_single_images_and_reject_mismatched_shapes():
    x = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(5))
    assert metrics.psnr(x, x) == 100.0
    with pytest.raises(InvalidArgument):
        metrics.psnr(x, x[:, :10])
    with pytest.raises(InvalidArgument):
        metrics.ssim(x[0], x[0])


# --- tiled restore --------------------------------------------------------------------------


class ConvNet(nn.Module):
    """Three 3x3 convolutions: a receptive field of 7x7, so tiles overlapping by 8 pixels or more
    see everything each output pixel depends on."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(16, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


def test_tile_starts_cover_the_image_and_end_at_its_edge():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(101, 40, 10) == [0, 30, 60, 61]
    assert tile_starts(40, 40, 10) == [0]
    assert tile_starts(20, 40, 10) == [0]
    assert count_tiles(101, 100, 40, 10) == 12
    assert count_tiles(101, 100, 0, 10) == 1


def test_tiled_restore_equals_whole_for_a_convolutional_model():
    torch.manual_seed(0)
    model = ConvNet()
    image = torch.rand(3, 75, 98)
    whole = restore_image(model, image)
    progress = []
    tiled = restore_image(model, image, tile_size=32, overlap=12, on_tile=lambda d, t: progress.append((d, t)))
    total = count_tiles(75, 98, 32, 12)
    assert progress == [(i, total) for i in range(1, total + 1)]
    assert tiled.shape == image.shape
    # Pixels next to an interior cut see zero padding instead of the neighbour's pixels; the linear
    # blend gives them little weight, so the tiled result stays within a level of 8-bit rounding
    # (cutting without overlap leaves visible seams).
    error = (tiled - whole).abs().max().item()
    assert error < 3e-3
    seams = (restore_image(model, image, tile_size=32, overlap=0) - whole).abs().max().item()
    assert seams > 3 * error


def test_tiled_restore_has_no_seams_where_tiles_agree():
    # A per-pixel model: tiles agree exactly, so the blended result must equal the whole run.
    model = nn.Conv2d(3, 3, 1)
    torch.manual_seed(1)
    image = torch.rand(1, 3, 50, 70)
    whole = restore_image(model, image)
    tiled = restore_image(model, image, tile_size=16, overlap=8)
    assert tiled.shape == (1, 3, 50, 70)
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_untrained_restormer_preserves_the_image_in_tiles():
    torch.manual_seed(0)
    model = build_model("tiny")
    image = torch.rand(3, 45, 61)
    assert torch.allclose(restore_image(model, image, tile_size=24, overlap=8), image, atol=1e-5)
    assert torch.allclose(restore_image(model, image, tile_size=0), image, atol=1e-5)
    assert model.training  # its mode is restored


def test_tiled_restore_of_a_trained_restormer_stays_close_to_whole():
    torch.manual_seed(0)
    model = build_model("tiny")
    nn.init.normal_(model.output.weight, std=0.05)
    image = smooth_images(torch.Generator().manual_seed(6), 1, 96)[0]
    whole = restore_image(model, image)
    tiled = restore_image(model, image, tile_size=64, overlap=16)
    # Channel attention sees the whole tile, so tiles differ a little from the whole image.
    assert metrics.psnr(tiled, whole) > 35


def test_restore_cancels_between_tiles():
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled("cancelled")

    done = []
    with pytest.raises(Cancelled):
        restore_image(
            nn.Identity(),
            torch.rand(3, 64, 64),
            tile_size=16,
            overlap=0,
            on_tile=lambda d, t: done.append(d),
            check_cancelled=check,
        )
    assert done == [1, 2]


@pytest.mark.parametrize(
    ("tile", "overlap", "field"), [(4, 0, "tile_size"), (32, 17, "tile_overlap"), (32, -1, "tile_overlap")]
)
def test_invalid_tiling_names_the_field(tile, overlap, field):
    with pytest.raises(InvalidArgument) as caught:
        restore_image(nn.Identity(), torch.rand(3, 16, 16), tile_size=tile, overlap=overlap)
    assert caught.value.field == field


def test_restore_clamps_to_the_unit_range():
    out = restore_image(nn.Identity(), torch.full((3, 8, 8), 1.5))
    assert out.max().item() == 1.0
    assert not math.isnan(out.sum().item())
