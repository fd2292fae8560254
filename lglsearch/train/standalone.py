"""Training one arch on its own with the supernet's recipe: the fair reference for proxy accuracy.

The loop is `lglsearch.train.loop.fit`; the recipe is the supernet's (`Recipe.of_supernet`: no
label smoothing, no EMA), which the ranking benchmarks' committed results were trained with.
"""

from __future__ import annotations

from lglsearch._rng import seeded
from lglsearch.nn import EdgeViT, build_model
from lglsearch.space import Arch
from lglsearch.train._distributed import placement
from lglsearch.train.data import ImageData
from lglsearch.train.loop import fit
from lglsearch.train.recipe import Recipe, TrainConfig

__all__ = ["train_standalone"]


def train_standalone(
    arch: Arch, data: ImageData, config: TrainConfig, *, progress: bool = True, accelerator: str = "auto"
) -> EdgeViT:
    """`arch` trained from scratch on `data` with `config`'s epochs, batch, AdamW and cosine schedule
    (on a CUDA GPU when `accelerator` finds one; the returned model is on the CPU)."""
    where = placement(accelerator)
    with seeded(config.seed):  # the caller's random state is left as it was
        model = build_model(arch)
        trained = fit(
            model, data, Recipe.of_supernet(config), where=where, evaluate=False, progress=progress, desc=arch.id
        )
    return trained.model
