"""Parameters and MACs of an `Arch`, in closed form.

MACs count the conv and matmul work of one image (convolutions, linear layers and the two
attention matmuls), the convention of the EdgeViT paper's "FLOPs" (0.551 / 1.128 / 1.911 G for
XXS / XS / S). Norms, activations, pooling and upsampling are not counted. The closed form is
checked against the built models (parameters) and torch's FlopCounterMode (MACs) in the tests;
it needs no model, so the search can count thousands of archs per second.
"""

from __future__ import annotations

from dataclasses import dataclass

from lglsearch.space import Arch, Stage

__all__ = ["Counts", "count", "count_macs", "count_params"]


@dataclass(frozen=True)
class Counts:
    params: int
    macs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def macs_g(self) -> float:
        return self.macs / 1e9

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.params + other.params, self.macs + other.macs)

    def __mul__(self, times: int) -> Counts:
        return Counts(times * self.params, times * self.macs)


def _local_agg(width: int, hidden: int, tokens: int) -> Counts:
    c, n = width, tokens
    params = 10 * c + 2 * c + 2 * (c * c + c) + 26 * c + 2 * c + (2 * c * hidden + hidden + c)
    macs = (9 * c + 2 * c * c + 25 * c + 2 * c * hidden) * n
    return Counts(params, macs)


def _self_attn(stage: Stage, hidden: int, tokens: int, propagation: str) -> Counts:
    c, n, sr = stage.width, tokens, stage.sr
    delegates = n // (sr * sr)
    params = 10 * c + 2 * c + (3 * c * c + 3 * c) + (c * c + c) + 2 * c + (2 * c * hidden + hidden + c)
    macs = 9 * c * n + 3 * c * c * delegates + 2 * delegates * delegates * c + c * c * n + 2 * c * hidden * n
    if sr > 1:
        params += 2 * c  # LayerNorm after the propagation
        if propagation == "tconv":  # depthwise ConvTranspose2d(kernel = stride = sr)
            params += c * sr * sr + c
            macs += c * n
    return Counts(params, macs)


def count(arch: Arch, in_chans: int = 3) -> Counts:
    """Parameters and MACs of the model `build_model(arch)` builds."""
    total = Counts(0, 0)
    chans = in_chans
    for i, (stage, grid) in enumerate(zip(arch.stages, arch.grids, strict=True)):
        patch = arch.patch(i)
        tokens, c, hidden = grid * grid, stage.width, int(stage.width * stage.mlp_ratio)
        total += Counts(chans * c * patch * patch + c + 2 * c, chans * c * patch * patch * tokens)
        total += _local_agg(c, hidden, tokens) * stage.n_local
        total += _self_attn(stage, hidden, tokens, arch.propagation) * stage.n_attn
        chans = c
    return total + Counts(2 * chans + chans * arch.num_classes + arch.num_classes, chans * arch.num_classes)


def count_params(arch: Arch) -> int:
    return count(arch).params


def count_macs(arch: Arch) -> int:
    return count(arch).macs
