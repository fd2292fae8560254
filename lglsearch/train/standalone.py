"""Training one arch on its own with the supernet's recipe: the fair reference for proxy accuracy.

The loop is `lglsearch.train.trainer.fit`; the recipe here is the supernet's (no label smoothing,
no EMA), which the ranking benchmarks' committed results were trained with.
"""

from __future__ import annotations

from torch import nn

from lglsearch.nn import EdgeViT, build_model
from lglsearch.rng import seeded
from lglsearch.space import Arch
from lglsearch.train.data import ImageData
from lglsearch.train.distributed import placement
from lglsearch.train.supernet import TrainConfig
from lglsearch.train.supernet import evaluate as top1
from lglsearch.train.trainer import Recipe, fit

__all__ = ["evaluate", "supernet_recipe", "train_standalone"]


def evaluate(model: nn.Module, data: ImageData) -> float:
    """Top-1 on the validation split."""
    return top1(model, data.val)


def supernet_recipe(config: TrainConfig) -> Recipe:
    """The supernet's recipe as a stand-alone one: the same epochs, batch, AdamW and schedule."""
    return Recipe(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        label_smoothing=0.0,
        seed=config.seed,
        max_steps_per_epoch=config.max_steps_per_epoch,
    )


def train_standalone(
    arch: Arch, data: ImageData, config: TrainConfig, *, progress: bool = True, accelerator: str = "auto"
) -> EdgeViT:
    """`arch` trained from scratch on `data` with `config`'s epochs, batch, AdamW and cosine schedule
    (on a CUDA GPU when `accelerator` finds one; the returned model is on the CPU)."""
    where = placement(accelerator)
    with seeded(config.seed):  # the caller's random state is left as it was
        model = build_model(arch)
        trained = fit(
            model, data, supernet_recipe(config), where=where, evaluate=False, progress=progress, desc=arch.id
        )
    return trained.model
