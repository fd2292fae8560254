"""How a network is trained: the supernet's `TrainConfig` and a stand-alone arch's `Recipe`.

Both are checked when they are made (`_check_schedule`), so a bad learning rate, batch size or
epoch count is a one-line error before any data is read. `TrainConfig.key` names a trained
supernet in the cache: it hashes exactly the fields below, so adding a field changes every key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from lglsearch.errors import LglsearchError

if TYPE_CHECKING:
    from lglsearch.space import Space

__all__ = ["Recipe", "Schedule", "TrainConfig"]


class Schedule(Protocol):
    """What the training loop reads of a recipe: a `TrainConfig` or a `Recipe`."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    seed: int
    max_steps_per_epoch: int | None
    label_smoothing: float  # the loop's default step's; a custom step ignores it
    ema_decay: float | None  # None: no EMA


def _check_schedule(recipe: Schedule) -> None:
    """Raise, naming the field and the fix, where `recipe` cannot train."""
    if recipe.epochs < 1:
        raise LglsearchError(f"epochs must be >= 1, got {recipe.epochs}; pass --epochs 1 or more")
    if recipe.batch_size < 1:
        raise LglsearchError(f"batch size must be >= 1, got {recipe.batch_size}; pass --batch-size 1 or more")
    if not (math.isfinite(recipe.lr) and recipe.lr > 0):
        raise LglsearchError(f"the learning rate must be a number > 0, got {recipe.lr}; pass e.g. --lr 2e-3")
    if not (math.isfinite(recipe.weight_decay) and recipe.weight_decay >= 0):
        raise LglsearchError(f"weight decay must be >= 0, got {recipe.weight_decay}; pass e.g. --weight-decay 0.05")
    if recipe.warmup_epochs < 0:
        raise LglsearchError(f"warm-up epochs must be >= 0, got {recipe.warmup_epochs}; use 0 for no warm-up")
    if recipe.max_steps_per_epoch is not None and recipe.max_steps_per_epoch < 1:
        raise LglsearchError(
            f"max_steps_per_epoch must be >= 1 or None, got {recipe.max_steps_per_epoch}; use None for whole epochs"
        )
    if not 0 <= recipe.label_smoothing < 1:
        raise LglsearchError(f"label smoothing must be in [0, 1), got {recipe.label_smoothing}; e.g. 0.1")
    if recipe.ema_decay is not None and not 0 < recipe.ema_decay < 1:
        raise LglsearchError(f"the EMA decay must be in (0, 1), e.g. 0.999, got {recipe.ema_decay}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained supernet (and so its cache key)."""

    space: str | None = None  # a space file or shipped name; None = the default space
    data: str | None = None  # None = the embedded proxy
    resolution: int = 64
    epochs: int = 3  # the default supernet: minutes on a 2-core CPU (64 px, batch 64; benchmarks/RESULTS.md)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    n_random: int = 1  # with the largest and smallest: 3 sub-archs a step (the default's time: benchmarks/RESULTS.md)
    # in-place distillation (the other archs learn the largest's soft predictions): off by default,
    # labels rank archs better on the proxy (benchmarks/RESULTS.md, "Proxy supernet")
    distill: bool = False
    seed: int = 0
    max_steps_per_epoch: int | None = None  # a quick mode for tests and demos
    # not fields (the cache key hashes the fields): the sandwich learns plain labels and keeps no EMA
    label_smoothing: ClassVar[float] = 0.0
    ema_decay: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        _check_schedule(self)
        if self.n_random < 0:
            raise LglsearchError(f"n_random must be >= 0, got {self.n_random}; 0 trains the largest and smallest only")

    def key(self, space: Space, data_source: str, world: int = 1) -> str:
        """A short hash of the resolved space, data and recipe (and the process count under torchrun)."""
        recipe = dataclasses.asdict(self) | {"space": space.to_dict(), "data": data_source}
        if self.distill:  # the recipe before the option existed (it distilled): its supernets keep their keys
            del recipe["distill"]
        if world > 1:  # each process takes a batch: a different global batch and schedule
            recipe["world"] = world
        return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Recipe:
    """How an arch is trained on its own (everything but the data and the arch)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    ema_decay: float | None = None  # None: no EMA
    seed: int = 0
    max_steps_per_epoch: int | None = None  # a quick mode for tests and demos

    def __post_init__(self) -> None:
        _check_schedule(self)

    @classmethod
    def of_supernet(cls, config: TrainConfig) -> Recipe:
        """The supernet's recipe as a stand-alone one: the same epochs, batch, AdamW and schedule,
        no label smoothing and no EMA (the fair reference for a supernet's proxy accuracy)."""
        return cls(
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup_epochs=config.warmup_epochs,
            label_smoothing=config.label_smoothing,
            ema_decay=config.ema_decay,
            seed=config.seed,
            max_steps_per_epoch=config.max_steps_per_epoch,
        )
