"""Training one arch on its own with the supernet's recipe: the fair reference for proxy accuracy."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from lglsearch.nn import EdgeViT, build_model
from lglsearch.rng import seeded
from lglsearch.space import Arch
from lglsearch.train.data import ImageData
from lglsearch.train.distributed import placement
from lglsearch.train.supernet import TrainConfig, _loader, make_optimizer, steps_per_epoch
from lglsearch.train.supernet import evaluate as top1

__all__ = ["evaluate", "train_standalone"]


def evaluate(model: nn.Module, data: ImageData) -> float:
    """Top-1 on the validation split."""
    return top1(model, data.val)


def train_standalone(
    arch: Arch, data: ImageData, config: TrainConfig, *, progress: bool = True, accelerator: str = "auto"
) -> EdgeViT:
    """`arch` trained from scratch on `data` with `config`'s epochs, batch, AdamW and cosine schedule
    (on a CUDA GPU when `accelerator` finds one; the returned model is on the CPU)."""
    device = placement(accelerator).device
    with seeded(config.seed):  # the caller's random state is left as it was
        return _train(arch, data, config, device, progress)


def _train(arch: Arch, data: ImageData, config: TrainConfig, device: torch.device, progress: bool) -> EdgeViT:
    model = build_model(arch).to(device)
    steps = steps_per_epoch(config, data)
    optimizer, scheduler = make_optimizer(model, config, steps)
    for epoch in range(config.epochs):
        torch.manual_seed(config.seed + epoch)
        model.train()
        loader = _loader(data.train, config.batch_size, config.seed + epoch, shuffle=True)
        bar = tqdm(
            total=steps,
            desc=f"{arch.id} epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=not progress,
            file=sys.stderr,
        )
        for step, (images, labels) in enumerate(loader):
            if step >= steps:
                break
            loss = F.cross_entropy(model(images.to(device)), labels.to(device))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update(epoch * steps + step + 1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
        bar.close()
    return model.cpu().eval()
