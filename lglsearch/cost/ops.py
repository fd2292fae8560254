"""The operator keys an `Arch` decomposes into, and the standalone module of each key.

A key is one part of the network at one input shape, written as text that names every
dimension that changes its cost, e.g. ``self_attn:c=144,h=4,sr=2,r=4,hw=14,s=pick,p=tconv``.
The parts are the LGL block's: the patch embedding of a stage (``embed``), LocalAgg
(``local_agg``), SelfAttn with its positional conv, global sparse attention (sampling and
propagation included) and MLP (``self_attn``), and the classifier (``head``). A network's
latency is the sum of its keys' latencies; `op_module(key)` rebuilds the key's module from the
same blocks `build_model` uses, so what is timed is what runs.

Why whole LocalAgg / SelfAttn rather than finer parts: each timed op pays a fixed dispatch cost
that the whole network pays once, so finer keys add error, while coarser keys (whole stages)
multiply the number of keys beyond what can be measured. The validation figures in
benchmarks/RESULTS.md are the judge of this choice.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from lglsearch.cost.reference import reference_module
from lglsearch.errors import LglsearchError
from lglsearch.nn.blocks import LocalAgg, PatchEmbed, SelfAttn
from lglsearch.space import PATCH_STRIDE_LATER, PATCH_STRIDES_FIRST, Arch, Space, Stage

__all__ = [
    "AUX_KINDS",
    "OP_KINDS",
    "arch_ops",
    "head_key",
    "key_tuple",
    "op_input_shape",
    "op_module",
    "op_parts",
    "parse_key",
    "space_ops",
    "stage_ops",
]

OP_KINDS = ("embed", "local_agg", "self_attn", "head")
AUX_KINDS = ("attn_part", "mlp_part", "ref")
"""Keys timed only to derive phone tables: SelfAttn's two halves, and reference blocks
(`ref:<nn-Meter key>`) of real phone measurements."""


def _key(kind: str, **dims: object) -> str:
    return f"{kind}:" + ",".join(f"{k}={v}" for k, v in dims.items())


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """(kind, dims) of a key; a malformed key is an error naming it."""
    kind, _, rest = key.partition(":")
    if kind not in OP_KINDS + AUX_KINDS or not rest:
        raise LglsearchError(f"malformed op key {key!r}; keys look like 'local_agg:c=36,r=4,hw=56'")
    if kind == "ref":
        return kind, {"key": rest}
    try:
        dims = dict(item.split("=", 1) for item in rest.split(","))
    except ValueError:
        raise LglsearchError(f"malformed op key {key!r}; dimensions are name=value pairs") from None
    return kind, dims


def key_tuple(key: str) -> tuple | None:
    """An op key as the tuple `CostTable.cost` looks up (same fields, parsed to numbers).

    None for the auxiliary kinds, which no network is priced with.
    """
    kind, d = parse_key(key)
    if kind in AUX_KINDS:
        return None
    try:
        return _fields(kind, d)
    except KeyError as err:
        raise LglsearchError(
            f"op key {key!r} lacks the dimension {err.args[0]!r}; a {kind} key names "
            f"{', '.join(_DIMENSIONS.get(kind, _DIMENSIONS['other']))}"
        ) from None
    except ValueError:
        raise LglsearchError(f"op key {key!r} has a dimension that is not a number") from None


_DIMENSIONS = {  # what `_fields` reads of each kind (s and p of self_attn are optional)
    "embed": ("cin", "c", "k", "hw"),
    "local_agg": ("c", "r", "hw"),
    "self_attn": ("c", "h", "sr", "r", "hw"),
    "other": ("c", "n", "hw"),
}


def _fields(kind: str, d: dict[str, str]) -> tuple:
    if kind == "embed":
        return (kind, int(d["cin"]), int(d["c"]), int(d["k"]), int(d["hw"]))
    if kind == "local_agg":
        return (kind, int(d["c"]), float(d["r"]), int(d["hw"]))
    if kind == "self_attn":
        return (
            kind,
            int(d["c"]),
            int(d["h"]),
            int(d["sr"]),
            float(d["r"]),
            int(d["hw"]),
            d.get("s", ""),
            d.get("p", ""),
        )
    return (kind, int(d["c"]), int(d["n"]), int(d["hw"]))


def _ratio(r: float) -> str:
    return f"{r:g}"


@lru_cache(maxsize=65536)
def stage_ops(stage: Stage, index: int, in_chans: int, grid: int, sampler: str, propagation: str) -> tuple[str, ...]:
    """The keys of one stage (cached: a search prices many archs that share stages)."""
    patch = PATCH_STRIDES_FIRST if index == 0 else PATCH_STRIDE_LATER
    keys = [_key("embed", cin=in_chans, c=stage.width, k=patch, hw=grid * patch)]
    local = _key("local_agg", c=stage.width, r=_ratio(stage.mlp_ratio), hw=grid)
    attn_dims = dict(c=stage.width, h=stage.heads, sr=stage.sr, r=_ratio(stage.mlp_ratio), hw=grid)
    if stage.sr > 1:
        attn_dims |= dict(s=sampler, p=propagation)
    attn = _key("self_attn", **attn_dims)
    for kind in stage.kinds:
        if kind in ("lgl", "local"):
            keys.append(local)
        if kind in ("lgl", "global"):
            keys.append(attn)
    return tuple(keys)


def arch_ops(arch: Arch, in_chans: int = 3) -> list[str]:
    """The op keys of `arch`, in execution order (a key repeats once per use)."""
    keys: list[str] = []
    chans = in_chans
    for i, (stage, grid) in enumerate(zip(arch.stages, arch.grids, strict=True)):
        keys.extend(stage_ops(stage, i, chans, grid, arch.sampler, arch.propagation))
        chans = stage.width
    keys.append(head_key(arch))
    return keys


def head_key(arch: Arch) -> str:
    return _key("head", c=arch.stages[-1].width, n=arch.num_classes, hw=arch.grids[-1])


def space_ops(space: Space, in_chans: int = 3) -> list[str]:
    """Every distinct op key any arch of `space` can use, sorted.

    Enumerated per stage from the choices (not by sampling), so the list is complete.
    """
    keys: set[str] = set()
    ins = [in_chans]
    for i, (choices, grid) in enumerate(zip(space.stages, space.grids, strict=True)):
        patch = PATCH_STRIDES_FIRST if i == 0 else PATCH_STRIDE_LATER
        for width in choices.width:
            keys.update(_key("embed", cin=c, c=width, k=patch, hw=grid * patch) for c in ins)
            for r in choices.mlp_ratio:
                if "local" in choices.kinds or "lgl" in choices.kinds:
                    keys.add(_key("local_agg", c=width, r=_ratio(r), hw=grid))
                if "global" in choices.kinds or "lgl" in choices.kinds:
                    for heads in choices.heads_for(width):
                        for sr in choices.sr:
                            dims = dict(c=width, h=heads, sr=sr, r=_ratio(r), hw=grid)
                            if sr == 1:
                                keys.add(_key("self_attn", **dims))
                                continue
                            for s in space.sampler:
                                for p in space.propagation:
                                    keys.add(_key("self_attn", **dims, s=s, p=p))
        ins = list(choices.width)
    keys.update(_key("head", c=w, n=space.num_classes, hw=space.grids[-1]) for w in ins)
    return sorted(keys)


class _Head(nn.Module):
    """BatchNorm, global average pool, Linear: the classifier as EdgeViT runs it."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x).mean(dim=(2, 3)))


class _AttnPart(nn.Module):
    """SelfAttn's first half: positional conv, then sparse attention on the tokens (residuals kept)."""

    def __init__(self, block: SelfAttn) -> None:
        super().__init__()
        self.pos_embed, self.norm, self.attn = block.pos_embed, block.norm1, block.attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        _, _, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        return tokens + self.attn(self.norm(tokens), height, width)


class _MlpPart(nn.Module):
    """SelfAttn's second half: pre-norm MLP on the tokens with its residual."""

    def __init__(self, block: SelfAttn) -> None:
        super().__init__()
        self.norm, self.mlp = block.norm2, block.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def op_parts(key: str) -> list[tuple[str, str]]:
    """(part key, op class) of an op, for transferring host timings to a phone per class.

    SelfAttn is split into its attention and MLP halves, which phones speed up differently.
    """
    kind, _ = parse_key(key)
    rest = key.partition(":")[2]
    if kind == "embed":
        return [(key, "downsampling")]
    if kind == "self_attn":
        d = parse_key(key)[1]
        return [(f"attn_part:{rest}", "attention"), (_key("mlp_part", c=d["c"], r=d["r"], hw=d["hw"]), "mlp")]
    if kind in ("local_agg", "head"):
        return [(key, "convolutional")]
    raise LglsearchError(f"{key!r} is not an op of a network")


def op_module(key: str) -> nn.Module:
    """The standalone module of a key, built from the same blocks as the models."""
    kind, d = parse_key(key)
    if kind == "ref":
        return reference_module(d["key"])[0]
    try:
        if kind == "attn_part":
            return _AttnPart(op_module(key.replace("attn_part:", "self_attn:", 1)))
        if kind == "mlp_part":
            return _MlpPart(SelfAttn(int(d["c"]), 1, float(d["r"])))
        if kind == "embed":
            return PatchEmbed(int(d["cin"]), int(d["c"]), int(d["k"]))
        if kind == "local_agg":
            return LocalAgg(int(d["c"]), float(d["r"]))
        if kind == "self_attn":
            return SelfAttn(
                int(d["c"]),
                int(d["h"]),
                float(d["r"]),
                int(d["sr"]),
                d.get("s", "pick"),
                d.get("p", "tconv"),
            )
        return _Head(int(d["c"]), int(d["n"]))
    except (KeyError, ValueError) as err:
        raise LglsearchError(f"op key {key!r} lacks or garbles a dimension ({err})") from None


def op_input_shape(key: str) -> tuple[int, ...]:
    """The batch-1 input of a key's module: (1, C, H, W), or (1, tokens, C) for token modules."""
    kind, d = parse_key(key)
    if kind == "ref":
        return reference_module(d["key"])[1]
    chans = int(d["cin"]) if kind == "embed" else int(d["c"])
    hw = int(d["hw"])
    return (1, hw * hw, chans) if kind == "mlp_part" else (1, chans, hw, hw)
