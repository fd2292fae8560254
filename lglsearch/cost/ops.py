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


def stage_args(arch: Arch, in_chans: int = 3) -> list[StageArgs]:
    """The `StageArgs` of each stage of `arch`: a stage reads the previous stage's width.

    Block order does not change a sum, so a stage is its counts of LocalAgg and SelfAttn. Written
    out in one loop, as pricing runs it for every stage of every arch.
    """
    last, sampler, propagation, chans, out = len(arch.stages) - 1, arch.sampler, arch.propagation, in_chans, []
    for i, (st, grid) in enumerate(zip(arch.stages, arch.grids, strict=True)):
        classes = arch.num_classes if i == last else 0
        out.append(
            (
                i,
                chans,
                grid,
                st.width,
                st.heads,
                st.sr,
                st.mlp_ratio,
                st.n_local,
                st.n_attn,
                sampler,
                propagation,
                classes,
            )
        )
        chans = st.width
    return out


@lru_cache(maxsize=1 << 16)
def stage_ops(args: StageArgs) -> tuple[tuple[OpKey, int], ...]:
    """The op keys of one stage with how often each runs (cached: the archs of a search share stages).

    The embedding once, LocalAgg and SelfAttn once per block that runs them, and after the last
    stage the classifier.
    """
    index, in_chans, grid, width, heads, sr, ratio, n_local, n_attn, sampler, propagation, classes = args
    patch = Arch.patch(index)
    ops: list[tuple[OpKey, int]] = [(EmbedKey.of(in_chans, width, patch, grid * patch), 1)]
    if n_local:
        ops.append((LocalAggKey.of(width, ratio, grid), n_local))
    if n_attn:
        ops.append((SelfAttnKey.of(width, heads, sr, ratio, grid, sampler, propagation), n_attn))
    if classes:
        ops.append((HeadKey.of(width, classes, grid), 1))
    return tuple(ops)


def arch_ops(arch: Arch, in_chans: int = 3) -> list[str]:
    """The op keys of `arch` as table keys, stage by stage (a key repeats once per use)."""
    return [str(key) for args in stage_args(arch, in_chans) for key, uses in stage_ops(args) for _ in range(uses)]


def space_ops(space: Space, in_chans: int = 3) -> list[str]:
    """Every distinct op key any arch of `space` can use, as sorted table keys.

    Enumerated from the choices, not by sampling, so the list is complete: the ops of stage `i`
    of an arch for each choice of that stage (one block of every kind it allows, at every width,
    heads, sr and mlp ratio) after each width of the stage before, with each sampler and
    propagation. The arch's other stages are the smallest; only stage `i`'s input width matters.
    """
    keys: set[OpKey] = set()
    smallest = space.smallest().stages
    for i, choices in enumerate(space.stages):
        inputs = space.stages[i - 1].width if i else (0,)
        for width, ratio, sr, cin, sampler, propagation in product(
            choices.width, choices.mlp_ratio, choices.sr, inputs, space.sampler, space.propagation
        ):
            for heads in choices.heads_for(width):
                stages = list(smallest)
                stages[i] = Stage(width=width, heads=heads, sr=sr, mlp_ratio=ratio, kinds=choices.kinds)
                if i:  # any stage of width `cin` will do: local blocks take no heads or sr
                    stages[i - 1] = Stage(width=cin, heads=1, sr=1, mlp_ratio=ratio, kinds=("local",))
                arch = Arch(tuple(stages), space.resolution, space.num_classes, sampler, propagation)
                keys.update(key for key, _ in stage_ops(stage_args(arch, in_chans)[i]))
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
