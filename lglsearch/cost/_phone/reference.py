"""The reference blocks of real phone measurements, rebuilt in PyTorch for host timing.

The phone tables are nn-Meter's block-level lookup tables (github.com/microsoft/nn-Meter, branch
`dev/hybrid-transformer`, `nn_meter/predictor/transformer_predictor/lut/*_lut_ln_v3.json`, MIT
License, Copyright (c) Microsoft Corporation): Keras blocks converted to TFLite fp32 and timed
on each phone's CPU with `benchmark_model`, 1 thread. Their keys describe the blocks; this module
parses a key, assigns its op class and builds the same block (activation hard-swish, NHWC there,
NCHW here) so that it can be timed on the host with the runner the EdgeViT ops use.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from timm.layers import SEModule
from torch import nn

from lglsearch.errors import LglsearchError

__all__ = ["OP_CLASSES", "load_reference", "reference_class", "reference_kind", "reference_module"]

OP_CLASSES = ("convolutional", "attention", "mlp", "downsampling")

_PATTERNS = {
    "firstconv": (r"firstconv_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)", "convolutional"),
    "conv": (r"conv_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)_hard_swish_(\d+)_(se|nose)", "convolutional"),
    "mbpool": (r"mbpool_(\d+)_(\d+)_(\d+)_(\d+)_hard_swish", "convolutional"),
    "transds": (r"transds_(\d+)_(\d+)_(\d+)_(\d+)_(\d+)", "downsampling"),
    "transattn": (r"transattn_(\d+)_(\d+)_hard_swish_(\d+)_ln", "attention"),
    "transffn": (r"transffn_(\d+)_(\d+)_(\d+)_hard_swish_ln", "mlp"),
}


def _parse(key: str) -> tuple[str, list[int]]:
    kind = key.split("_", 1)[0]
    match = re.fullmatch(_PATTERNS[kind][0], key) if kind in _PATTERNS else None
    if match is None:
        raise LglsearchError(
            f"unknown reference block {key!r}; expected nn-Meter keys such as 'transattn_16_48_hard_swish_2_ln'"
        )
    return kind, [int(g) if g.isdigit() else int(g == "se") for g in match.groups()]


def reference_kind(key: str) -> str:
    """The nn-Meter block kind of a reference key: conv, firstconv, mbpool, transds, transattn, transffn."""
    return _parse(key)[0]


def reference_class(key: str) -> str:
    """The op class of a reference block: convolutional, attention, mlp or downsampling."""
    return _PATTERNS[_parse(key)[0]][1]


def load_reference(path: str | Path) -> dict[str, float]:
    """A phone's reference measurements: {nn-Meter key: latency in ms}, validated."""
    path = Path(path)
    if not path.is_file():
        raise LglsearchError(f"reference file {path} does not exist; give a phone's nn-Meter LUT JSON")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LglsearchError(f"reference file {path} is not JSON ({err}); give a phone's nn-Meter LUT JSON") from None
    if not isinstance(data, dict) or not data:
        raise LglsearchError(f"reference file {path} must be a JSON object of block key -> latency in ms")
    for key, value in data.items():
        _parse(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise LglsearchError(f"reference file {path}: {key!r} has latency {value!r}; latencies are positive ms")
    return {k: float(v) for k, v in data.items()}


def _bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.Hardswish()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV3 block: expand 1x1, depthwise k x k (stride), optional SE, project 1x1, shortcut."""

    def __init__(self, cin: int, cout: int, exp: int, stride: int, k: int, se: bool) -> None:
        super().__init__()
        mid = cin * exp
        self.expand = _bn_act(cin, mid, 1) if exp > 1 else nn.Identity()
        self.dw = _bn_act(mid, mid, k, stride, groups=mid)
        self.se = SEModule(mid, rd_ratio=0.25, gate_layer="hard_sigmoid") if se else nn.Identity()
        self.project = _bn_act(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout
        self.shortcut = None
        if cin != cout:
            pool = nn.AvgPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()  # "same" pooling
            self.shortcut = nn.Sequential(pool, nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        if self.residual:
            return x + y
        return y + self.shortcut(x) if self.shortcut is not None else y


class TokenDownsample(nn.Module):
    """transds: tokens to a map, an inverted residual with SE (k = 3), back to tokens."""

    def __init__(self, hw: int, cin: int, cout: int, stride: int, exp: int) -> None:
        super().__init__()
        self.hw = hw
        self.block = InvertedResidual(cin, cout, exp, stride, 3, se=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, chans = x.shape
        y = self.block(x.transpose(1, 2).reshape(batch, chans, self.hw, self.hw))
        return y.flatten(2).transpose(1, 2)


class LevitAttention(nn.Module):
    """transattn: LayerNorm, bias-free qkv (key dim 16, value dim 16 v), positional bias, hard-swish, proj."""

    def __init__(self, hw: int, dim: int, v: int) -> None:
        super().__init__()
        self.heads, self.vd = dim // 16, 16 * v
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, self.heads * (32 + self.vd), bias=False)
        self.pos_bias = nn.Parameter(torch.zeros(self.heads, hw * hw, hw * hw))
        self.act = nn.Hardswish()
        self.proj = nn.Linear(self.heads * self.vd, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, tokens, self.heads, 32 + self.vd).transpose(1, 2)
        q, k, v = qkv.split([16, 16, self.vd], dim=-1)
        attn = (q @ k.transpose(-2, -1) * 0.25 + self.pos_bias).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, self.heads * self.vd)
        return self.proj(self.act(out))


class TokenFFN(nn.Module):
    """transffn: LayerNorm, bias-free Dense C -> exp C, hard-swish, Dense back, plus the norm's output."""

    def __init__(self, dim: int, exp: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * exp, bias=False)
        self.act = nn.Hardswish()
        self.fc2 = nn.Linear(dim * exp, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        return y + self.fc2(self.act(self.fc1(y)))


class PoolHead(nn.Module):
    """mbpool: expand 1x1 + BN + act, global average pool, 1x1 conv to cout, Dense to 1000."""

    def __init__(self, cin: int, cout: int, exp: int) -> None:
        super().__init__()
        self.expand = _bn_act(cin, cin * exp, 1)
        self.conv = nn.Conv2d(cin * exp, cout, 1)
        self.act = nn.Hardswish()
        self.fc = nn.Linear(cout, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x).mean(dim=(2, 3), keepdim=True)
        return self.fc(self.act(self.conv(y)).flatten(1))


def reference_module(key: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The block of a reference key and its batch-1 input shape (hw is the input side)."""
    kind, g = _parse(key)
    if kind == "firstconv":
        hw, cin, cout, stride, k = g
        return _bn_act(cin, cout, k, stride), (1, cin, hw, hw)
    if kind == "conv":
        hw, cin, cout, exp, stride, k, se = g
        return InvertedResidual(cin, cout, exp, stride, k, bool(se)), (1, cin, hw, hw)
    if kind == "mbpool":
        hw, cin, cout, exp = g
        return PoolHead(cin, cout, exp), (1, cin, hw, hw)
    if kind == "transds":
        hw, cin, cout, stride, exp = g
        return TokenDownsample(hw, cin, cout, stride, exp), (1, hw * hw, cin)
    if kind == "transattn":
        hw, dim, v = g
        return LevitAttention(hw, dim, v), (1, hw * hw, dim)
    hw, dim, exp = g
    return TokenFFN(dim, exp), (1, hw * hw, dim)
