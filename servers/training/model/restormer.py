"""Restormer (Zamir et al., CVPR 2022, "Restormer: Efficient Transformer for High-Resolution Image
Restoration"), written for this project from the paper's description.

The network is a 4-level U-shaped encoder-decoder of transformer blocks. Each block is

    x = x + MDTA(LayerNorm(x))     multi-Dconv head transposed attention: attention across
                                   channels (a C/heads x C/heads map per head), so its cost grows
                                   linearly with the pixel count
    x = x + GDFN(LayerNorm(x))     gated-Dconv feed-forward network: GELU(a) * b

Levels are joined by pixel-unshuffle (down: H/2, 2C) and pixel-shuffle (up: 2H, C/2); decoder
levels take the encoder's features by concatenation, reduced back by a 1x1 convolution (except
the first level, which keeps the concatenated 2C channels, as in the paper). Refinement blocks run
at full resolution, and the output is ``input + net(input)`` (global residual; the last layer
starts at zero, so an untrained network is the identity).

``ARCHITECTURES`` is the explicit table of size presets, matching the training proto's
``Architecture`` enum: ``tiny`` (tens of thousands of parameters, CPU smoke runs), ``small`` (about
a million) and ``base`` (the paper's configuration, about 26 M).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genmesh.errors import InvalidArgument

LayerNormKind = Literal["with_bias", "bias_free"]

# The encoder downsamples three times by 2: inputs are padded to a multiple of this.
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class RestormerConfig:
    """Widths and depths of one Restormer. ``width`` is level 1's channel count; level k has
    ``width * 2**(k-1)`` channels, ``blocks[k-1]`` transformer blocks and ``heads[k-1]`` heads
    (each level's channel count must divide by its head count)."""

    width: int = 48
    blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    refinement_blocks: int = 4
    ffn_expansion: float = 2.66
    bias: bool = False
    layer_norm: LayerNormKind = "with_bias"
    in_channels: int = 3
    out_channels: int = 3

    def __post_init__(self) -> None:
        if self.width < 1:
            raise InvalidArgument(f"width must be at least 1 (got {self.width})", field="width")
        if len(self.blocks) != 4 or len(self.heads) != 4:
            raise InvalidArgument("blocks and heads need 4 values (one per level)", field="blocks")
        if any(b < 1 for b in self.blocks) or self.refinement_blocks < 0:
            raise InvalidArgument("every level needs at least one block", field="blocks")
        for level, heads in enumerate(self.heads):
            channels = self.width * 2**level
            if heads < 1 or channels % heads:
                raise InvalidArgument(
                    f"level {level + 1} has {channels} channels, not divisible by {heads} heads", field="heads"
                )
        if self.ffn_expansion <= 0:
            raise InvalidArgument("ffn_expansion must be positive", field="ffn_expansion")
        if self.layer_norm not in ("with_bias", "bias_free"):
            raise InvalidArgument(
                f"layer_norm must be 'with_bias' or 'bias_free' (got {self.layer_norm!r})", field="layer_norm"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as stored in checkpoints and model files."""
        data = dataclasses.asdict(self)
        data["blocks"] = list(self.blocks)
        data["heads"] = list(self.heads)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestormerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidArgument(f"unknown Restormer config keys: {sorted(unknown)}", field="config")
        values = dict(data)
        for key in ("blocks", "heads"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


ARCHITECTURES: dict[str, RestormerConfig] = {
    # About 56 K parameters: minutes of training on two CPU cores.
    "tiny": RestormerConfig(width=4, blocks=(1, 1, 1, 1), heads=(1, 1, 2, 2), refinement_blocks=1),
    # About 1.2 M parameters: quick experiments.
    "small": RestormerConfig(width=16, blocks=(2, 2, 2, 2), heads=(1, 2, 4, 8), refinement_blocks=1),
    # The paper's model: about 26.1 M parameters.
    "base": RestormerConfig(),
}


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a (N, C, H, W) tensor. ``bias_free`` scales by
    the channel standard deviation without centring or a bias, as the paper's BiasFree variant."""

    def __init__(self, channels: int, kind: LayerNormKind = "with_bias", eps: float = 1e-5) -> None:
        super().__init__()
        self.kind = kind
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if kind == "with_bias" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is not None:
            # F.layer_norm over a channels-last view: one fused kernel instead of five elementwise ops.
            y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
            return y.permute(0, 3, 1, 2)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x * torch.rsqrt(var + self.eps) * self.weight[:, None, None]


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention. q, k and v come from a 1x1 convolution followed by a
    3x3 depthwise one; each head attends across its channels: softmax(norm(q) norm(k)^T * t) v,
    with one learnable temperature t per head."""

    def __init__(self, channels: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(
            channels * 3, channels * 3, kernel_size=3, padding=1, groups=channels * 3, bias=bias
        )
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q = F.normalize(q.reshape(n, self.heads, c // self.heads, h * w), dim=-1)
        k = F.normalize(k.reshape(n, self.heads, c // self.heads, h * w), dim=-1)
        v = v.reshape(n, self.heads, c // self.heads, h * w)
        attention = (q @ k.transpose(-2, -1)) * self.temperature
        out = attention.softmax(dim=-1) @ v
        return self.project_out(out.reshape(n, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: 1x1 expand to 2 x hidden, 3x3 depthwise, split into a
    GELU gate and a value, multiply, 1x1 back to ``channels``."""

    def __init__(self, channels: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    def __init__(self, channels: int, heads: int, config: RestormerConfig) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels, config.layer_norm)
        self.attn = MDTA(channels, heads, config.bias)
        self.norm2 = ChannelLayerNorm(channels, config.layer_norm)
        self.ffn = GDFN(channels, config.ffn_expansion, config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _stage(channels: int, heads: int, count: int, config: RestormerConfig) -> nn.Sequential:
    return nn.Sequential(*(TransformerBlock(channels, heads, config) for _ in range(count)))


class Downsample(nn.Module):
    """(N, C, H, W) -> (N, 2C, H/2, W/2): 3x3 conv to C/2, then pixel-unshuffle by 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """(N, C, H, W) -> (N, C/2, 2H, 2W): 3x3 conv to 2C, then pixel-shuffle by 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Restormer(nn.Module):
    """The full network. ``forward`` takes (N, in_channels, H, W) of any H and W (padded by
    reflection to a multiple of 8 inside, cropped back) and returns the restored image with the
    same shape; with ``in_channels == out_channels`` the output is ``input + residual``."""

    def __init__(self, config: RestormerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or RestormerConfig()
        self.residual = config.in_channels == config.out_channels
        w, blocks, heads = config.width, config.blocks, config.heads
        self.patch_embed = nn.Conv2d(config.in_channels, w, kernel_size=3, padding=1, bias=config.bias)

        self.encoder1 = _stage(w, heads[0], blocks[0], config)
        self.down1_2 = Downsample(w)
        self.encoder2 = _stage(w * 2, heads[1], blocks[1], config)
        self.down2_3 = Downsample(w * 2)
        self.encoder3 = _stage(w * 4, heads[2], blocks[2], config)
        self.down3_4 = Downsample(w * 4)
        self.latent = _stage(w * 8, heads[3], blocks[3], config)

        self.up4_3 = Upsample(w * 8)
        self.reduce3 = nn.Conv2d(w * 8, w * 4, kernel_size=1, bias=config.bias)
        self.decoder3 = _stage(w * 4, heads[2], blocks[2], config)
        self.up3_2 = Upsample(w * 4)
        self.reduce2 = nn.Conv2d(w * 4, w * 2, kernel_size=1, bias=config.bias)
        self.decoder2 = _stage(w * 2, heads[1], blocks[1], config)
        self.up2_1 = Upsample(w * 2)
        # Level 1 keeps the concatenation's 2w channels (no reduction), as in the paper.
        self.decoder1 = _stage(w * 2, heads[0], blocks[0], config)
        self.refinement = _stage(w * 2, heads[0], config.refinement_blocks, config)
        self.output = nn.Conv2d(w * 2, config.out_channels, kernel_size=3, padding=1, bias=config.bias)
        if self.residual:
            # Not in the paper: a zero output layer makes the untrained network the identity, so
            # training starts at the degraded baseline instead of below it (about +1.5 dB after a
            # few CPU epochs of the tiny preset). The first step moves it off zero; every layer learns from
            # the second step on.
            nn.init.zeros_(self.output.weight)
            if self.output.bias is not None:
                nn.init.zeros_(self.output.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4:
            raise InvalidArgument(f"expected a (N, C, H, W) tensor, got shape {tuple(image.shape)}", field="image")
        h, w = image.shape[-2:]
        x = pad_to_multiple(image, SIZE_MULTIPLE)

        e1 = self.encoder1(self.patch_embed(x))
        e2 = self.encoder2(self.down1_2(e1))
        e3 = self.encoder3(self.down2_3(e2))
        latent = self.latent(self.down3_4(e3))

        d3 = self.decoder3(self.reduce3(torch.cat([self.up4_3(latent), e3], dim=1)))
        d2 = self.decoder2(self.reduce2(torch.cat([self.up3_2(d3), e2], dim=1)))
        d1 = self.decoder1(torch.cat([self.up2_1(d2), e1], dim=1))
        out = self.output(self.refinement(d1))
        if self.residual:
            out = out + x
        return out[..., :h, :w]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right of (N, C, H, W) to multiples of ``multiple``: by reflection, or by
    replicating the edge where the image is too small to reflect."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def architecture_config(name: str) -> RestormerConfig:
    """The preset called ``name``; ``InvalidArgument`` (field ``architecture``) lists the names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise InvalidArgument(
            f"architecture: unknown architecture {name!r} (one of {', '.join(ARCHITECTURES)})", field="architecture"
        ) from None


def build_model(name: str | RestormerConfig) -> Restormer:
    """A freshly initialised Restormer of a preset name (see ``ARCHITECTURES``) or a config. Uses
    torch's global RNG for the initial weights: seed it (or fork it) first for reproducible ones.
    Build under ``torch.device("meta")`` to count parameters without allocating them."""
    config = name if isinstance(name, RestormerConfig) else architecture_config(name)
    return Restormer(config)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (works on meta-device models too)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
