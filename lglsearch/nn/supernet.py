"""A weight-sharing supernet holding every arch of a `Space` (OFA / AutoFormer style).

Each layer holds the largest weight any arch of the space needs, in the static model's own module
classes and names, and runs the static blocks' forwards (`lglsearch.nn.blocks`) with elastic
layers (`lglsearch.nn.elastic`) that slice it: output widths come from the active arch, input
widths from the incoming tensor. Depth is a prefix of each stage's blocks; every block position
holds both a LocalAgg and a SelfAttn, and the block kind says which run; heads re-split the sliced
q, k, v; each sampling rate has its own propagation (transposed conv and norm), since their
kernels differ in size. `set_arch(arch)` is the one entry point that picks the arch (validated
against the space) and sets each layer; `extract(arch)` returns the plain static `EdgeViT` of the
arch with the sliced weights copied in, which computes the same function (tested), so what is
deployed holds no elastic code.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from lglsearch.nn.blocks import LocalAgg, PatchEmbed, SelfAttn
from lglsearch.nn.edgevit import EdgeViT, _init_weights, build_model
from lglsearch.nn.elastic import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLayerNorm2d,
    ElasticLinear,
    ElasticMlp,
    ElasticSparseAttn,
    qkv_rows,
)
from lglsearch.space import Arch, Space, runs_attention, runs_local

__all__ = ["Supernet"]


class SuperBlock(nn.Module):
    """One block position: the LocalAgg and the SelfAttn the space's kinds there may need, at full size."""

    def __init__(self, dim: int, mlp_ratio: float, srs: tuple[int, ...], kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.local_agg = (
            LocalAgg(dim, mlp_ratio, norm_layer=ElasticBatchNorm2d, conv_layer=ElasticConv2d, mlp_layer=ElasticMlp)
            if any(map(runs_local, kinds))
            else None
        )
        self.self_attn = (
            SelfAttn(
                dim,
                1,  # heads, rate, sampler and propagation are the active arch's (`set_arch`)
                mlp_ratio,
                norm_layer=partial(ElasticLayerNorm, eps=1e-6),
                conv_layer=ElasticConv2d,
                attn_layer=partial(ElasticSparseAttn, srs=srs),
                mlp_layer=ElasticMlp,
            )
            if any(map(runs_attention, kinds))
            else None
        )


class SuperStage(nn.Module):
    def __init__(self, in_chans: int, space: Space, index: int) -> None:
        super().__init__()
        choices = space.stages[index]
        patch = Arch.patch(index)
        dim, ratio = max(choices.width), max(choices.mlp_ratio)
        self.downsample = PatchEmbed(
            in_chans, dim, patch, conv_layer=ElasticConv2d, norm_layer=partial(ElasticLayerNorm2d, eps=1e-5)
        )
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
        self.norm = ElasticBatchNorm2d(chans)
        self.head = ElasticLinear(chans, space.num_classes)
        self.apply(_init_weights)  # the static model's init: a subnet starts where a stand-alone model would
        self.set_arch(space.largest())

    def set_arch(self, arch: Arch) -> Supernet:
        """Validate `arch` against the space and set every layer's active width, heads and rate."""
        self.arch = self.space.validate(arch)
        for stage_mod, stage in zip(self.stages, arch.stages, strict=True):
            stage_mod.downsample.proj.width = stage.width
            for block in stage_mod.blocks:
                for part in (block.local_agg, block.self_attn):
                    if part is not None:
                        part.mlp.fc1.width, part.mlp.fc2.width = int(stage.width * stage.mlp_ratio), stage.width
                if block.self_attn is not None:
                    block.self_attn.attn.set(stage.heads, stage.sr, arch.sampler, arch.propagation)
        self.head.width = arch.num_classes
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage_mod, stage in zip(self.stages, self.arch.stages, strict=True):
            x = stage_mod.downsample(x)
            for block, kind in zip(stage_mod.blocks, stage.kinds, strict=False):
                if runs_local(kind):
                    x = block.local_agg(x)
                if runs_attention(kind):
                    x = block.self_attn(x)
        return self.head(self.norm(x).mean(dim=(2, 3)))

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
                full = full[qkv_rows(full.shape[0] // 3, target.shape[0] // 3, full.device)]
            weights[key] = full[tuple(slice(0, d) for d in target.shape)].clone() if target.dim() else full.clone()
        model.load_state_dict(weights, strict=True)
        return model
