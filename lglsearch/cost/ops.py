"""How an `Arch` splits into ops: the op keys (`OpKey`) of a stage, of an arch and of a space.

The parts are the LGL block's: the patch embedding of a stage (``embed``), LocalAgg
(``local_agg``), SelfAttn with its positional conv, global sparse attention (sampling and
propagation included) and MLP (``self_attn``), and the classifier (``head``). A network's
latency is the sum of its keys' latencies; `stage_ops` is the one place that says which keys a
stage runs and how often, and everything that prices or lists ops goes through it.

Why whole LocalAgg / SelfAttn rather than finer parts: each timed op pays a fixed dispatch cost
that the whole network pays once, so finer keys add error, while coarser keys (whole stages)
multiply the number of keys beyond what can be measured. The validation figures in
benchmarks/RESULTS.md are the judge of this choice.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product
from typing import TYPE_CHECKING

from lglsearch.cost.opkey import AUX_KINDS, OP_KINDS, EmbedKey, HeadKey, LocalAggKey, OpKey, SelfAttnKey
from lglsearch.space import Arch, Space, Stage

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "AUX_KINDS",
    "OP_KINDS",
    "OpKey",
    "StageArgs",
    "arch_ops",
    "op_input_shape",
    "op_module",
    "op_parts",
    "space_ops",
    "stage_args",
    "stage_ops",
]

StageArgs = tuple[int, int, int, int, int, int, float, int, int, str, str, int]
"""All a stage's ops depend on: index, input channels, grid, width, heads, sr, mlp ratio, LocalAgg
and SelfAttn counts, sampler, propagation, and the classes of the classifier after the last stage
(0 before it). Plain numbers and strings, so that a search hashes them fast."""


def _stage_args(
    stage: Stage, index: int, in_chans: int, grid: int, switches: tuple[str, str], classes: int
) -> StageArgs:
    # block order does not change a sum, so a stage is its counts of LocalAgg and SelfAttn
    return (
        index,
        in_chans,
        grid,
        stage.width,
        stage.heads,
        stage.sr,
        stage.mlp_ratio,
        stage.n_local,
        stage.n_attn,
        *switches,
        classes,
    )


def stage_args(arch: Arch, in_chans: int = 3) -> list[StageArgs]:
    """The `StageArgs` of each stage of `arch`: a stage reads the previous stage's width."""
    last, switches, chans, out = len(arch.stages) - 1, (arch.sampler, arch.propagation), in_chans, []
    for i, (stage, grid) in enumerate(zip(arch.stages, arch.grids, strict=True)):
        out.append(_stage_args(stage, i, chans, grid, switches, arch.num_classes if i == last else 0))
        chans = stage.width
    return out


@lru_cache(maxsize=1 << 16)
def stage_ops(args: StageArgs) -> tuple[tuple[OpKey, int], ...]:
    """The op keys of one stage with how often each runs (cached: the archs of a search share stages).

    The embedding once, LocalAgg and SelfAttn once per block that runs them, and after the last
    stage the classifier.
    """
    index, in_chans, grid, width, heads, sr, ratio, n_local, n_attn, sampler, propagation, classes = args
    patch = Arch.patch(index)
    ops: list[tuple[OpKey, int]] = [(EmbedKey(in_chans, width, patch, grid * patch), 1)]
    if n_local:
        ops.append((LocalAggKey(width, ratio, grid), n_local))
    if n_attn:
        ops.append((SelfAttnKey(width, heads, sr, ratio, grid, sampler, propagation), n_attn))
    if classes:
        ops.append((HeadKey(width, classes, grid), 1))
    return tuple(ops)


def arch_ops(arch: Arch, in_chans: int = 3) -> list[str]:
    """The op keys of `arch` as table keys, stage by stage (a key repeats once per use)."""
    return [str(key) for args in stage_args(arch, in_chans) for key, uses in stage_ops(args) for _ in range(uses)]


def space_ops(space: Space, in_chans: int = 3) -> list[str]:
    """Every distinct op key any arch of `space` can use, as sorted table keys.

    Enumerated from the choices, not by sampling, so the list is complete: per stage, a stage
    holding every block kind the stage allows, at every width, heads, sr and mlp ratio, after
    every width of the stage before, with every sampler and propagation.
    """
    keys: set[OpKey] = set()
    ins: tuple[int, ...] = (in_chans,)
    last = len(space.stages) - 1
    for i, (choices, grid) in enumerate(zip(space.stages, space.grids, strict=True)):
        classes = space.num_classes if i == last else 0
        for width, ratio, sr in product(choices.width, choices.mlp_ratio, choices.sr):
            for heads in choices.heads_for(width):
                stage = Stage(width=width, heads=heads, sr=sr, mlp_ratio=ratio, kinds=choices.kinds)
                for cin, *switches in product(ins, space.sampler, space.propagation):
                    args = _stage_args(stage, i, cin, grid, (switches[0], switches[1]), classes)
                    keys.update(key for key, _ in stage_ops(args))
        ins = choices.width
    return sorted(map(str, keys))


# Text-keyed names for callers that hold table keys; new code can call the `OpKey` itself.


def op_parts(key: str | OpKey) -> list[tuple[str, str]]:
    """`OpKey.parts` as (part key, op class) text pairs."""
    return [(str(part), op_class) for part, op_class in OpKey.parse(key).parts()]


def op_module(key: str | OpKey) -> nn.Module:
    """`OpKey.module` of a table key."""
    return OpKey.parse(key).module()


def op_input_shape(key: str | OpKey) -> tuple[int, ...]:
    """`OpKey.input_shape` of a table key."""
    return OpKey.parse(key).input_shape
