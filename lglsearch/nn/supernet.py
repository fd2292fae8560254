"""A weight-sharing supernet holding every arch of a `Space` (OFA / AutoFormer style).

Each layer holds the largest weight any arch of the space needs, in the static model's own module
classes and names, and the forward slices it: output widths come from the active arch, input
widths from the incoming tensor. Depth is a prefix of each stage's blocks; every block position
holds both a LocalAgg and a SelfAttn, and the block kind says which run; heads re-split the sliced
q, k, v; each sampling rate has its own propagation (transposed conv and norm), since their
kernels differ in size. `set_arch(arch)` is the one entry point that picks the arch (validated
against the space); `extract(arch)` returns the plain static `EdgeViT` of the arch with the
sliced weights copied in, which computes the same function (tested), so what is deployed holds
no elastic code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lglsearch.nn.blocks import LocalAgg, PatchEmbed, TokenNorm, make_sampler
from lglsearch.nn.edgevit import EdgeViT, _init_weights, build_model
from lglsearch.space import PATCH_STRIDE_LATER, PATCH_STRIDES_FIRST, Arch, Space, Stage

__all__ = ["Supernet"]


# -- slicing: pure functions of a full-size layer and the input ---------------------------------


def _conv(x: torch.Tensor, layer: nn.Conv2d, out: int) -> torch.Tensor:
    bias = layer.bias[:out] if layer.bias is not None else None
    return F.conv2d(x, layer.weight[:out, : x.shape[1]], bias, layer.stride, layer.padding)


def _dwconv(x: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
    c = x.shape[1]
    return F.conv2d(x, layer.weight[:c], layer.bias[:c], layer.stride, layer.padding, groups=c)


def _linear(x: torch.Tensor, layer: nn.Linear, out: int) -> torch.Tensor:
    return F.linear(x, layer.weight[:out, : x.shape[-1]], layer.bias[:out])


def _layer_norm(x: torch.Tensor, layer: nn.LayerNorm) -> torch.Tensor:
    c = x.shape[-1]
    return F.layer_norm(x, (c,), layer.weight[:c], layer.bias[:c], layer.eps)


def _batch_norm(x: torch.Tensor, layer: nn.BatchNorm2d) -> torch.Tensor:
    # sliced running statistics are views: training updates the full buffers in place; momentum
    # None is a cumulative average (as nn.BatchNorm2d does it), used for BN recalibration
    c = x.shape[1]
    momentum = layer.momentum
    if layer.training:
        layer.num_batches_tracked.add_(1)
        if momentum is None:
            momentum = 1.0 / float(layer.num_batches_tracked)
    return F.batch_norm(
        x,
        layer.running_mean[:c],
        layer.running_var[:c],
        layer.weight[:c],
        layer.bias[:c],
        layer.training,
        momentum or 0.0,
        layer.eps,
    )


def _qkv_rows(full: int, width: int, device: torch.device) -> torch.Tensor:
    """Rows of a full (3W, W) qkv weight that form the (3w, w) one: the first w of q, of k, of v."""
    base = torch.arange(width, device=device)
    return torch.cat([base, base + full, base + 2 * full])


# -- the supernet's blocks: parameter holders of the static classes, sliced forwards -----------


class SuperSelfAttn(nn.Module):
    """SelfAttn at full size, with one propagation (and its norm) per sampling rate."""

    def __init__(self, dim: int, mlp_ratio: float, srs: tuple[int, ...]) -> None:
        super().__init__()
        from timm.layers import Mlp

        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = TokenNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim * 3)
        self.attn.proj = nn.Linear(dim, dim)
        sparse = [sr for sr in srs if sr > 1]
        self.attn.local_prop = nn.ModuleDict(
            {str(sr): nn.ConvTranspose2d(dim, dim, kernel_size=sr, stride=sr, groups=dim) for sr in sparse}
        )
        self.attn.norm = nn.ModuleDict({str(sr): nn.LayerNorm(dim) for sr in sparse})
        self.norm2 = TokenNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def run(self, x: torch.Tensor, stage: Stage, sampler: str, propagation: str) -> torch.Tensor:
        x = x + _dwconv(x, self.pos_embed)
        batch, dim, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self._attention(_layer_norm(tokens, self.norm1), stage, sampler, propagation, height, width)
        hidden = int(dim * stage.mlp_ratio)
        y = _linear(self.mlp.act(_linear(_layer_norm(tokens, self.norm2), self.mlp.fc1, hidden)), self.mlp.fc2, dim)
        return (tokens + y).transpose(1, 2).reshape(batch, dim, height, width)

    def _attention(
        self, x: torch.Tensor, stage: Stage, sampler: str, propagation: str, height: int, width: int
    ) -> torch.Tensor:
        attn, sr, heads = self.attn, stage.sr, stage.heads
        batch, _, dim = x.shape
        if sr > 1:
            grid = x.transpose(1, 2).reshape(batch, dim, height, width)
            x = make_sampler(sampler, sr)(grid).flatten(2).transpose(1, 2)
        rows = _qkv_rows(attn.qkv.out_features // 3, dim, x.device)
        qkv = F.linear(x, attn.qkv.weight[rows, :dim], attn.qkv.bias[rows])
        q, k, v = qkv.reshape(batch, -1, 3, heads, dim // heads).unbind(2)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x.transpose(1, 2).reshape(batch, -1, dim)
        if sr > 1:
            x = x.transpose(1, 2).reshape(batch, dim, height // sr, width // sr)
            if propagation == "tconv":
                prop = attn.local_prop[str(sr)]
                x = F.conv_transpose2d(x, prop.weight[:dim], prop.bias[:dim], stride=sr, groups=dim)
            else:
                x = F.interpolate(x, scale_factor=sr, mode=propagation)
            x = _layer_norm(x.flatten(2).transpose(1, 2), attn.norm[str(sr)])
        return _linear(x, attn.proj, dim)


def _local_agg(x: torch.Tensor, m: LocalAgg, mlp_ratio: float) -> torch.Tensor:
    c = x.shape[1]
    x = x + _dwconv(x, m.pos_embed)
    y = _conv(_dwconv(_conv(_batch_norm(x, m.norm1), m.pw1, c), m.dw), m.pw2, c)
    x = x + y
    hidden = int(c * mlp_ratio)
    return x + _conv(m.mlp.act(_conv(_batch_norm(x, m.norm2), m.mlp.fc1, hidden)), m.mlp.fc2, c)


class SuperBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, srs: tuple[int, ...], kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.local_agg = LocalAgg(dim, mlp_ratio) if {"lgl", "local"} & set(kinds) else None
        self.self_attn = SuperSelfAttn(dim, mlp_ratio, srs) if {"lgl", "global"} & set(kinds) else None


class SuperStage(nn.Module):
    def __init__(self, in_chans: int, space: Space, index: int) -> None:
        super().__init__()
        choices = space.stages[index]
        patch = PATCH_STRIDES_FIRST if index == 0 else PATCH_STRIDE_LATER
        dim, ratio = max(choices.width), max(choices.mlp_ratio)
        self.downsample = PatchEmbed(in_chans, dim, patch)
        self.blocks = nn.ModuleList(
            SuperBlock(dim, ratio, choices.sr, choices.kinds) for _ in range(max(choices.depth))
        )


class Supernet(nn.Module):
    """Every arch of `space` in one network; `set_arch` picks the one `forward` runs."""

    def __init__(self, space: Space, *, in_chans: int = 3) -> None:
        super().__init__()
        self.space = space
        stages, chans = [], in_chans
        for i in range(len(space.stages)):
            stages.append(SuperStage(chans, space, i))
            chans = max(space.stages[i].width)
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm2d(chans)
        self.head = nn.Linear(chans, space.num_classes)
        self.arch = space.largest()
        self.apply(_init_weights)  # the static model's init: a subnet starts where a stand-alone model would

    def set_arch(self, arch: Arch) -> Supernet:
        self.arch = self.space.validate(arch)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.arch
        for stage_mod, stage in zip(self.stages, arch.stages, strict=True):
            x = _layer_norm2d(_conv(x, stage_mod.downsample.proj, stage.width), stage_mod.downsample.norm)
            for block, kind in zip(stage_mod.blocks, stage.kinds, strict=False):
                if kind in ("lgl", "local"):
                    x = _local_agg(x, block.local_agg, stage.mlp_ratio)
                if kind in ("lgl", "global"):
                    x = block.self_attn.run(x, stage, arch.sampler, arch.propagation)
        x = _batch_norm(x, self.norm).mean(dim=(2, 3))
        return _linear(x, self.head, arch.num_classes)

    def subnet(self, arch: Arch) -> Supernet:
        """The supernet set to `arch` (call it like a model)."""
        return self.set_arch(arch)

    @torch.no_grad()
    def extract(self, arch: Arch) -> EdgeViT:
        """The stand-alone model of `arch` with the inherited (sliced) weights."""
        self.space.validate(arch)
        model = build_model(arch)
        source = self.state_dict()
        weights = {}
        for key, target in model.state_dict().items():
            stage = arch.stages[int(key.split(".")[1])] if key.startswith("stages.") else None
            name = key
            if stage is not None and (".attn.local_prop." in key or ".attn.norm." in key):
                part = "local_prop" if ".attn.local_prop." in key else "norm"
                name = key.replace(f".attn.{part}.", f".attn.{part}.{stage.sr}.")
            full = source[name]
            if key.endswith("attn.qkv.weight") or key.endswith("attn.qkv.bias"):
                full = full[_qkv_rows(full.shape[0] // 3, target.shape[0] // 3, full.device)]
            weights[key] = full[tuple(slice(0, d) for d in target.shape)].clone() if target.dim() else full.clone()
        model.load_state_dict(weights, strict=True)
        return model


def _layer_norm2d(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    c = x.shape[1]
    return F.layer_norm(x.permute(0, 2, 3, 1), (c,), layer.weight[:c], layer.bias[:c], layer.eps).permute(0, 3, 1, 2)
