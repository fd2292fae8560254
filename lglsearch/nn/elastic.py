"""Elastic layers: the static layers at full size, whose forward slices the weight to the active arch.

Each subclasses the static layer (so parameter names, shapes, initialisation and the state-dict
keys are the static model's) and is passed to the blocks of `lglsearch.nn.blocks` as their
`*_layer`, so the supernet runs the blocks' own forwards. Input widths come from the incoming
tensor; an output width the input does not give (a patch embedding, an MLP's hidden layer, the
classifier) is set by `Supernet.set_arch` on the layer's `width` (None: as wide as the input).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from lglsearch.nn.blocks import GlobalSparseAttn, make_sampler

__all__ = [
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticLayerNorm",
    "ElasticLayerNorm2d",
    "ElasticLinear",
    "ElasticMlp",
    "ElasticSparseAttn",
    "qkv_rows",
]


def qkv_rows(full: int, width: int, device: torch.device) -> torch.Tensor:
    """Rows of a full (3W, W) qkv weight that form the (3w, w) one: the first w of q, of k, of v."""
    base = torch.arange(width, device=device)
    return torch.cat([base, base + full, base + 2 * full])


class ElasticConv2d(nn.Conv2d):
    """A convolution sliced to the input's channels and `width` outputs; depthwise ones to the input's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.width: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.groups > 1:  # depthwise: one filter per channel
            return F.conv2d(x, self.weight[:c], self.bias[:c], self.stride, self.padding, groups=c)
        out = self.width or c
        bias = self.bias[:out] if self.bias is not None else None
        return F.conv2d(x, self.weight[:out, :c], bias, self.stride, self.padding)


class ElasticLinear(nn.Linear):
    """A linear layer sliced to the input's features and `width` outputs; with `parts` = 3 (a qkv
    layer) the outputs are three stacked blocks, each sliced to `width`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.width: int | None = None
        self.parts = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        out = self.width or c
        if self.parts == 1:
            return F.linear(x, self.weight[:out, :c], self.bias[:out])
        rows = qkv_rows(self.out_features // self.parts, out, x.device)
        return F.linear(x, self.weight[rows, :c], self.bias[rows])


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the input's (last-dimension) channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        return F.layer_norm(x, (c,), self.weight[:c], self.bias[:c], self.eps)


class ElasticLayerNorm2d(LayerNorm2d):
    """timm's LayerNorm2d (over the channels of NCHW) for the input's channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return F.layer_norm(x.permute(0, 2, 3, 1), (c,), self.weight[:c], self.bias[:c], self.eps).permute(0, 3, 1, 2)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm for the input's channels: the sliced running statistics are views, so training
    updates the full buffers in place; momentum None is a cumulative average (as nn.BatchNorm2d
    does it), which BN recalibration uses."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        momentum = self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(
            x,
            self.running_mean[:c],
            self.running_var[:c],
            self.weight[:c],
            self.bias[:c],
            self.training,
            momentum or 0.0,
            self.eps,
        )


class ElasticMlp(nn.Module):
    """timm's `Mlp` (no dropout, no norm: the supernet's) of elastic layers; `set_arch` sets fc1's
    width to the arch's hidden width and fc2's back to the block's."""

    def __init__(
        self, in_features: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU, use_conv: bool = False
    ) -> None:
        super().__init__()
        layer = partial(ElasticConv2d, kernel_size=1) if use_conv else ElasticLinear
        self.fc1 = layer(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = layer(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Propagation(nn.ModuleDict):
    """One transposed convolution per sampling rate (their kernels differ in size); `tconv` runs
    the active rate's, `nearest` and `bilinear` upsample without weights."""

    def __init__(self, dim: int, rates: list[int]) -> None:
        super().__init__({str(r): nn.ConvTranspose2d(dim, dim, kernel_size=r, stride=r, groups=dim) for r in rates})
        self.sr, self.kind = 1, "tconv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "tconv":
            return F.interpolate(x, scale_factor=self.sr, mode=self.kind)
        c, layer = x.shape[1], self[str(self.sr)]
        return F.conv_transpose2d(x, layer.weight[:c], layer.bias[:c], stride=self.sr, groups=c)


class _PerRate(nn.ModuleDict):
    """One layer per sampling rate; the active rate's runs."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__(layers)
        self.sr = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[str(self.sr)](x)


class ElasticSparseAttn(GlobalSparseAttn):
    """`GlobalSparseAttn` at full width with a propagation and a norm per sampling rate of `srs`;
    `set` picks the heads, rate, sampler and propagation that its forward then runs."""

    def __init__(self, dim: int, num_heads: int, *per_arch: int | str, srs: tuple[int, ...]) -> None:
        # `per_arch` is the rate, sampler and propagation SelfAttn passes: the first arch's, until `set`
        super().__init__(dim, num_heads, linear_layer=ElasticLinear)  # rate 1: only qkv and proj
        self.qkv.parts = 3
        rates = [r for r in srs if r > 1]
        self.local_prop = _Propagation(dim, rates)
        self.norm = _PerRate({str(r): ElasticLayerNorm(dim) for r in rates})
        self.set(num_heads, *per_arch)

    def set(self, num_heads: int, sr: int, sampler: str, propagation: str) -> None:
        self.num_heads, self.sr = num_heads, sr
        self.sampler = make_sampler(sampler, sr) if sr > 1 else nn.Identity()  # weightless
        self.local_prop.sr, self.local_prop.kind, self.norm.sr = sr, propagation, sr
