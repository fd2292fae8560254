"""`OpKey`: one op at one input shape, one frozen type per kind.

A key names every dimension that changes an op's cost and has one text form, the one tables
store, e.g. ``self_attn:c=144,h=4,sr=2,r=4,hw=14,s=pick,p=tconv``. `OpKey.parse` reads any
spelling of a key (fields in any order, ``r=4.0`` for ``r=4``, a dense SelfAttn's ignored
``s``/``p``) into the canonical key, so equal ops are equal keys and print the same text.
Each key builds its standalone module from the same blocks `build_model` uses (so what is timed
is what runs), knows its module's input shape and its parts (what a phone table is derived from).

The kinds a network is priced with are `OP_KINDS`; `AUX_KINDS` are timed only to derive phone
tables: SelfAttn's two halves and reference blocks (``ref:<nn-Meter key>``) of real phone
measurements.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch
from torch import nn

from lglsearch.errors import LglsearchError
from lglsearch.nn.blocks import LocalAgg, PatchEmbed, SelfAttn
from lglsearch.space import PROPAGATIONS, SAMPLERS

__all__ = [
    "AUX_KINDS",
    "OP_KINDS",
    "AttnPartKey",
    "EmbedKey",
    "HeadKey",
    "LocalAggKey",
    "MlpPartKey",
    "OpKey",
    "RefKey",
    "SelfAttnKey",
]

OP_KINDS = ("embed", "local_agg", "self_attn", "head")
AUX_KINDS = ("attn_part", "mlp_part", "ref")


def _text(value: object) -> str:
    # ratios as "%g" (the tables' form: 4.0 -> "4"), unless that would lose digits
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


@dataclass(frozen=True)
class OpKey:
    """One op at one input shape; `str(key)` is its table key, `OpKey.parse` reads one back."""

    kind: ClassVar[str]
    priced: ClassVar[bool] = True
    """Whether networks are priced with this kind (False: timed only to derive phone tables)."""
    op_class: ClassVar[str] = ""
    """The class by which a phone table is derived from this op timed whole ("": not timed whole)."""

    def __str__(self) -> str:
        dims = ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        return f"{self.kind}:" + ",".join(f"{name}={_text(value)}" for name, value in dims if value != "")

    @classmethod
    def of(cls, *dims: object) -> OpKey:
        """The key of these dimensions (in field order), one instance per op: a table finds it by identity."""
        return _interned(cls, *dims)

    @staticmethod
    def parse(key: str | OpKey) -> OpKey:
        """The canonical key of `key`'s text; a malformed key is an error naming it and the fix."""
        return key if isinstance(key, OpKey) else _parse(key)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The batch-1 input of the module: (1, C, H, W), or (1, tokens, C) for token modules."""
        return (1, self.c, self.hw, self.hw)  # type: ignore[attr-defined]

    def module(self) -> nn.Module:
        """The standalone module of the op, built from the same blocks as the models."""
        raise NotImplementedError

    def parts(self) -> tuple[tuple[OpKey, str], ...]:
        """(part, op class) of the op, what a phone model prices per part and class."""
        if not self.priced:
            raise LglsearchError(f"{str(self)!r} is not an op of a network")
        return ((self, self.op_class),)


@dataclass(frozen=True)
class EmbedKey(OpKey):
    """A stage's patch embedding (the downsampling) from `cin` channels at `hw` x `hw`."""

    kind: ClassVar[str] = "embed"
    op_class: ClassVar[str] = "downsampling"
    cin: int
    c: int
    k: int
    hw: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.cin, self.hw, self.hw)

    def module(self) -> nn.Module:
        return PatchEmbed(self.cin, self.c, self.k)


@dataclass(frozen=True)
class LocalAggKey(OpKey):
    """LocalAgg: `c` channels on a `hw` x `hw` grid, MLP ratio `r`."""

    kind: ClassVar[str] = "local_agg"
    op_class: ClassVar[str] = "convolutional"
    c: int
    r: float
    hw: int

    def module(self) -> nn.Module:
        return LocalAgg(self.c, self.r)


@dataclass(frozen=True)
class _AttentionKey(OpKey):
    """SelfAttn's dimensions; the sampler `s` and propagation `p` only where `sr` > 1."""

    c: int
    h: int
    sr: int
    r: float
    hw: int
    s: str = ""
    p: str = ""

    def __post_init__(self) -> None:
        # a dense SelfAttn neither samples nor propagates; a sparse one defaults to the reference's
        sparse = self.sr > 1
        object.__setattr__(self, "s", (self.s or SAMPLERS[0]) if sparse else "")
        object.__setattr__(self, "p", (self.p or PROPAGATIONS[0]) if sparse else "")

    def _block(self) -> SelfAttn:
        return SelfAttn(self.c, self.h, self.r, self.sr, self.s or SAMPLERS[0], self.p or PROPAGATIONS[0])


@dataclass(frozen=True)
class SelfAttnKey(_AttentionKey):
    """SelfAttn: positional conv, global sparse attention (sampling and propagation) and MLP."""

    kind: ClassVar[str] = "self_attn"

    def module(self) -> nn.Module:
        return self._block()

    def parts(self) -> tuple[tuple[OpKey, str], ...]:
        # attention and MLP, which phones speed up differently
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return ((AttnPartKey(**fields), "attention"), (MlpPartKey(self.c, self.r, self.hw), "mlp"))


@dataclass(frozen=True)
class AttnPartKey(_AttentionKey):
    """SelfAttn's first half: positional conv and sparse attention (timed to derive phone tables)."""

    kind: ClassVar[str] = "attn_part"
    priced: ClassVar[bool] = False

    def module(self) -> nn.Module:
        return _AttnPart(self._block())


@dataclass(frozen=True)
class MlpPartKey(OpKey):
    """SelfAttn's second half: its MLP on the tokens (timed to derive phone tables)."""

    kind: ClassVar[str] = "mlp_part"
    priced: ClassVar[bool] = False
    c: int
    r: float
    hw: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, self.hw * self.hw, self.c)

    def module(self) -> nn.Module:
        return _MlpPart(SelfAttn(self.c, 1, self.r))


@dataclass(frozen=True)
class HeadKey(OpKey):
    """The classifier: `c` channels at `hw` x `hw` to `n` classes."""

    kind: ClassVar[str] = "head"
    op_class: ClassVar[str] = "convolutional"
    c: int
    n: int
    hw: int

    def module(self) -> nn.Module:
        return _Head(self.c, self.n)


@dataclass(frozen=True)
class RefKey(OpKey):
    """A reference block of real phone measurements, named by its nn-Meter key."""

    kind: ClassVar[str] = "ref"
    priced: ClassVar[bool] = False
    key: str

    def __str__(self) -> str:
        return f"ref:{self.key}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.module_and_shape()[1]

    def module(self) -> nn.Module:
        return self.module_and_shape()[0]

    def module_and_shape(self) -> tuple[nn.Module, tuple[int, ...]]:
        # reference blocks belong to deriving phone tables: the pricing path does not import them
        from lglsearch.cost._phone.reference import reference_module

        return reference_module(self.key)


_INTERNED: dict[OpKey, OpKey] = {}


@lru_cache(maxsize=1 << 16)
def _interned(cls: type[OpKey], *dims: object) -> OpKey:
    # spellings that canonicalise alike (a dense SelfAttn's switches) share the instance too
    key = cls(*dims)
    return _INTERNED.setdefault(key, key)


_KINDS: dict[str, type[OpKey]] = {
    cls.kind: cls for cls in (EmbedKey, LocalAggKey, SelfAttnKey, HeadKey, AttnPartKey, MlpPartKey, RefKey)
}
_READ = {"int": int, "float": float, "str": str}  # field annotations (strings here) to readers
_SWITCHES = {"s": SAMPLERS, "p": PROPAGATIONS}


@lru_cache(maxsize=1 << 16)
def _parse(key: str) -> OpKey:
    kind, _, rest = key.partition(":")
    cls = _KINDS.get(kind)
    if cls is None or not rest:
        raise LglsearchError(f"malformed op key {key!r}; keys look like 'local_agg:c=36,r=4,hw=56'")
    if cls is RefKey:
        return RefKey.of(rest)
    try:
        dims = dict(item.split("=", 1) for item in rest.split(","))
    except ValueError:
        raise LglsearchError(f"malformed op key {key!r}; dimensions are name=value pairs") from None
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if f.default is dataclasses.MISSING]

    def garbled(problem: str) -> LglsearchError:
        return LglsearchError(
            f"op key {key!r} lacks or garbles a dimension: {problem}; a {kind} key names {', '.join(required)}"
        )

    unknown = sorted(set(dims) - {f.name for f in fields})
    if unknown:
        raise garbled(f"{unknown[0]!r} is not one of its dimensions")
    values: list[object] = []
    for f in fields:
        if f.name not in dims:
            if f.name in required:
                raise garbled(f"it lacks the dimension {f.name!r}")
            values.append(f.default)
            continue
        text = dims[f.name]
        try:
            value = _READ[str(f.type)](text)
        except ValueError:
            raise garbled(f"{f.name}={text!r} is not {'a whole number' if f.type == 'int' else 'a number'}") from None
        if f.name in _SWITCHES and value not in _SWITCHES[f.name]:
            raise garbled(f"{f.name}={text!r} is none of {', '.join(_SWITCHES[f.name])}")
        if f.name not in _SWITCHES and not value > 0:  # type: ignore[operator]
            raise garbled(f"{f.name}={text!r} is not positive")
        values.append(value)
    return cls.of(*values)


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
