"""The building blocks of EdgeViT's local-global-local (LGL) block.

Pan et al., "EdgeViTs: Competing Light-weight CNNs on Mobile Devices with Vision Transformers",
ECCV 2022 (arXiv 2205.03436); reference code github.com/saic-fi/edgevit. Module names here are
our own (snake_case); the reference's names appear only in the checkpoint converter.

Tensors between blocks are NCHW. Each block takes its layer types as arguments (timm style), so
the ablation switches of an `Arch` (delegate sampler, propagation) are just other layers, and the
supernet runs these same forwards with its elastic layers (`lglsearch.nn.elastic`) passed in.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, Mlp
from torch import nn

from lglsearch.space import BLOCK_KINDS, runs_attention, runs_local

# the reference's token norm (timm's ViT default) and patch-embedding norm
TokenNorm = partial(nn.LayerNorm, eps=1e-6)
PatchNorm = partial(LayerNorm2d, eps=1e-5)

__all__ = [
    "DepthwisePatchSpread",
    "GlobalSparseAttn",
    "LGLBlock",
    "LocalAgg",
    "PatchEmbed",
    "SelfAttn",
    "StridedPick",
    "make_sampler",
]


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: Conv2d(k = stride = patch) then LayerNorm over channels."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        patch: int,
        conv_layer: type[nn.Module] = nn.Conv2d,
        norm_layer: type[nn.Module] = PatchNorm,
    ) -> None:
        super().__init__()
        self.proj = conv_layer(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = norm_layer(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class LocalAgg(nn.Module):
    """Local aggregation: positional DW3x3, then PW-DW5x5-PW, then a 1x1-conv FFN."""

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.BatchNorm2d,
        conv_layer: type[nn.Module] = nn.Conv2d,
        mlp_layer: type[nn.Module] = Mlp,
    ) -> None:
        super().__init__()
        self.pos_embed = conv_layer(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = norm_layer(dim)
        self.pw1 = conv_layer(dim, dim, 1)
        self.dw = conv_layer(dim, dim, 5, padding=2, groups=dim)
        self.pw2 = conv_layer(dim, dim, 1)
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio), act_layer=act_layer, use_conv=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.pw2(self.dw(self.pw1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class StridedPick(nn.Module):
    """Delegates = every `sr`-th row and column (the reference's AvgPool2d(kernel 1, stride sr))."""

    def __init__(self, sr: int) -> None:
        super().__init__()
        self.sr = sr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.sr, :: self.sr]


def make_sampler(kind: str, sr: int) -> nn.Module:
    """How delegate tokens are taken from the (C, H, W) map: `pick`, `avg` or `max`."""
    if kind == "pick":
        return StridedPick(sr)
    if kind == "avg":
        return nn.AvgPool2d(sr, stride=sr)
    if kind == "max":
        return nn.MaxPool2d(sr, stride=sr)
    raise ValueError(f"unknown sampler {kind!r}")


class DepthwisePatchSpread(nn.Module):
    """The reference's propagation, ConvTranspose2d(dim, dim, kernel = stride = sr, groups = dim),
    as a broadcast multiply: each delegate scales its own sr x sr patch of weights, then the bias.

    With kernel = stride the patches do not overlap, so out[b, c, i*sr + a, j*sr + e] =
    x[b, c, i, j] * weight[c, 0, a, e] + bias[c]: one multiply per output element, as the
    transposed convolution. Why not the convolution itself: TFLite's TRANSPOSE_CONV has no groups,
    so the converter splits a depthwise one into a SLICE and a TRANSPOSE_CONV per channel (540 of
    each in edgevit_xxs); this form converts to RESHAPE, MUL, ADD (benchmarks/tflite_propagation.py).
    Parameters, their names, shapes and init are the ConvTranspose2d's, so checkpoints and seeded
    models are unchanged.
    """

    def __init__(self, dim: int, sr: int) -> None:
        super().__init__()
        self.sr = sr
        self.weight = nn.Parameter(torch.empty(dim, 1, sr, sr))  # ConvTranspose2d's (in, out / groups, k, k)
        self.bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.ConvTranspose2d's init (torch's _ConvNd.reset_parameters), draw for draw
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, height, width = x.shape
        sr = self.sr
        # (B, C, h, 1, w, 1) x (1, C, 1, sr, 1, sr): the 6-D broadcast keeps NCHW, so the converter
        # adds no transposes (a pixel_shuffle or a channels-last form each cost two more)
        patches = x.reshape(batch, dim, height, 1, width, 1) * self.weight.reshape(1, dim, 1, sr, 1, sr)
        return patches.reshape(batch, dim, height * sr, width * sr) + self.bias.reshape(1, dim, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, sr={self.sr}"


def _make_propagation(kind: str, dim: int, sr: int) -> nn.Module:
    """How (C, H/sr, W/sr) delegates are spread back to (C, H, W): `tconv`, `nearest`, `bilinear`."""
    if kind == "tconv":
        return DepthwisePatchSpread(dim, sr)
    if kind in ("nearest", "bilinear"):
        return nn.Upsample(scale_factor=sr, mode=kind)
    raise ValueError(f"unknown propagation {kind!r}")


class GlobalSparseAttn(nn.Module):
    """Multi-head self-attention among delegate tokens, propagated back to every token.

    With sr = 1 it is plain multi-head self-attention over all tokens.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr: int = 1,
        sampler: str = "pick",
        propagation: str = "tconv",
        linear_layer: type[nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.sr = sr
        self.qkv = linear_layer(dim, dim * 3)
        self.proj = linear_layer(dim, dim)
        if sr > 1:
            self.sampler = make_sampler(sampler, sr)
            self.local_prop = _make_propagation(propagation, dim, sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, dim = x.shape
        if self.sr > 1:
            grid = x.transpose(1, 2).reshape(batch, dim, height, width)
            x = self.sampler(grid).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(x).reshape(batch, -1, 3, self.num_heads, dim // self.num_heads).unbind(2)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x.transpose(1, 2).reshape(batch, -1, dim)
        if self.sr > 1:
            x = x.transpose(1, 2).reshape(batch, dim, height // self.sr, width // self.sr)
            x = self.norm(self.local_prop(x).flatten(2).transpose(1, 2))
        return self.proj(x)


class SelfAttn(nn.Module):
    """Positional DW3x3, then global sparse attention and an MLP on the tokens (pre-norm)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr: int = 1,
        sampler: str = "pick",
        propagation: str = "tconv",
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = TokenNorm,
        conv_layer: type[nn.Module] = nn.Conv2d,
        attn_layer: type[nn.Module] = GlobalSparseAttn,
        mlp_layer: type[nn.Module] = Mlp,
    ) -> None:
        super().__init__()
        self.pos_embed = conv_layer(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads, sr, sampler, propagation)
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio), act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        batch, dim, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.drop_path(self.attn(self.norm1(tokens), height, width))
        tokens = tokens + self.drop_path(self.mlp(self.norm2(tokens)))
        return tokens.transpose(1, 2).reshape(batch, dim, height, width)


class LGLBlock(nn.Module):
    """One block of a stage: `lgl` = LocalAgg + SelfAttn, `local` = LocalAgg, `global` = SelfAttn."""

    def __init__(
        self,
        kind: str,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr: int = 1,
        sampler: str = "pick",
        propagation: str = "tconv",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in BLOCK_KINDS:  # anything else would silently be an identity block
            raise ValueError(f"unknown block kind {kind!r}; use {', '.join(BLOCK_KINDS[:-1])} or {BLOCK_KINDS[-1]}")
        self.kind = kind
        self.local_agg = LocalAgg(dim, mlp_ratio, drop_path) if runs_local(kind) else None
        self.self_attn = (
            SelfAttn(dim, num_heads, mlp_ratio, sr, sampler, propagation, drop_path) if runs_attention(kind) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.local_agg is not None:
            x = self.local_agg(x)
        if self.self_attn is not None:
            x = self.self_attn(x)
        return x
