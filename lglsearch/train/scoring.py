"""The proxy accuracy of an arch, and what any model scores on a validation split.

`proxy_score(net, arch, data)` recalibrates BatchNorm statistics for the arch on a few unaugmented
training batches (a supernet's shared running statistics belong to no single arch), then measures
top-1 and cross-entropy on the validation split (cross-entropy is a smoother score than top-1 on a
small split); with a seed it is deterministic. Given `finetune_steps`, the arch is extracted and
trained that many steps on its own before it is scored: an arch's inherited weights are a
compromise shared with every other arch, and a short fine-tune moves them towards its own
(benchmarks/RESULTS.md measures how each score ranks stand-alone accuracy).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset, TensorDataset

from lglsearch._rng import seeded
from lglsearch.errors import LglsearchError
from lglsearch.nn.supernet import Supernet
from lglsearch.space import Arch
from lglsearch.train.data import ImageData, balanced_subset, loader
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.score import Score

__all__ = [
    "FINETUNE_LR",
    "accuracy",
    "calibration_images",
    "finetune",
    "materialise",
    "measure",
    "proxy_score",
    "proxy_scores",
    "recalibrated",
    "top1",
]

FINETUNE_LR = 1e-3  # constant, AdamW: the rate the ranking benchmark measured


def calibration_images(
    data: ImageData, *, calib_batches: int = 8, batch_size: int = 128, seed: int = 0
) -> list[torch.Tensor]:
    """The BatchNorm recalibration batches `accuracy` uses: the same for every arch of a seed."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(data.calib), generator=gen)[: calib_batches * batch_size].tolist()
    return [images for images, _ in loader(Subset(data.calib, picks), batch_size, seed, shuffle=False)]


def materialise(dataset: Any) -> TensorDataset:
    """A dataset without augmentation as tensors in memory: evaluating many archs transforms it once."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return TensorDataset(torch.stack(images), torch.tensor(labels))


def proxy_score(
    net: Supernet,
    arch: Arch,
    data: ImageData,
    *,
    calib: list[torch.Tensor] | None = None,
    calib_batches: int = 8,
    batch_size: int = 128,
    seed: int = 0,
    score_images: int = 0,
    finetune_steps: int = 0,
    finetune_lr: float = FINETUNE_LR,
    finetune_repeats: int = 1,
) -> Score:
    """Top-1 and cross-entropy on the validation split (a class-balanced `score_images` of it; 0 =
    all) after recalibrating BatchNorm for `arch`.

    `calib` are the batches of `calibration_images(data, ...)`; pass them to reuse them. With
    `finetune_steps`, the arch's inherited weights are first trained that many steps on its own
    (see `finetune`): slower, and a better ranking (benchmarks/RESULTS.md, "Proxy supernet");
    `finetune_repeats` averages the scores of that many fine-tunings on the batches of seeds
    `seed`, `seed + 1`, ..., which steadies the ranking against the choice of batches.
    """
    if finetune_steps < 0 or finetune_repeats < 1:
        raise LglsearchError(
            f"finetune_steps must be >= 0 and finetune_repeats >= 1, got {finetune_steps} and {finetune_repeats}"
        )
    if calib is None:
        calib = calibration_images(data, calib_batches=calib_batches, batch_size=batch_size, seed=seed)
    return proxy_scores(
        net,
        arch,
        data,
        {"val": balanced_subset(data.val, score_images)},
        calib=calib,
        seed=seed,
        finetune_steps=finetune_steps,
        finetune_lr=finetune_lr,
        finetune_repeats=finetune_repeats,
    )["val"]


def proxy_scores(
    net: Supernet,
    arch: Arch,
    data: ImageData,
    sets: Mapping[str, Any],
    *,
    calib: list[torch.Tensor],
    seed: int = 0,
    finetune_steps: int = 0,
    finetune_lr: float = FINETUNE_LR,
    finetune_repeats: int = 1,
) -> dict[str, Score]:
    """`proxy_score` on each of several evaluation `sets` (by name), fine-tuning once for all."""
    if finetune_steps:
        scores: dict[str, list[Score]] = {name: [] for name in sets}
        for repeat in range(finetune_repeats):
            model = finetune(net.extract(arch), data, finetune_steps, lr=finetune_lr, seed=seed + repeat)
            with recalibrated(model, calib):
                for name, dataset in sets.items():
                    scores[name].append(measure(model, dataset))
        # fine-tunings on the same images do not shrink the sampling error of those images: their mean keeps it
        return {
            name: Score(*(float(np.mean([getattr(s, f.name) for s in runs])) for f in dataclasses.fields(Score)))
            for name, runs in scores.items()
        }
    with recalibrated(net.set_arch(arch), calib, restore=True):
        return {name: measure(net, dataset) for name, dataset in sets.items()}


@contextmanager
def recalibrated(model: nn.Module, calib: list[torch.Tensor], *, restore: bool = False) -> Iterator[nn.Module]:
    """`model` with its BatchNorm statistics re-estimated on `calib` (a cumulative average), in eval
    mode; with `restore`, the previous statistics come back afterwards (a supernet's shared ones)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    device = next(model.parameters()).device
    with torch.no_grad():
        for images in calib:
            model(images.to(device))
    model.eval()
    try:
        yield model
    finally:
        for m, (momentum, mean, var, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if restore:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)


def finetune(
    model: nn.Module, data: ImageData, steps: int, *, lr: float = FINETUNE_LR, batch_size: int = 64, seed: int = 0
) -> nn.Module:
    """`model` (an extracted arch) after `steps` AdamW steps of cross-entropy on augmented training
    batches at a constant `lr`: the same batches for every arch of a seed.

    Inherited weights are shaped by every arch that shares them; a few steps on the arch alone
    move it towards its stand-alone self (whether that ranks archs better: benchmarks/RESULTS.md).
    """
    device = next(model.parameters()).device
    # the supernet recipe's weight decay
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=TrainConfig.weight_decay)
    model.train()
    with seeded(seed):  # the augmentations; the caller's random state is left as it was
        for step, (images, labels) in enumerate(loader(data.train, batch_size, seed, shuffle=True)):
            if step >= steps:
                break
            F.cross_entropy(model(images.to(device)), labels.to(device)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return model.eval()


def accuracy(net: Supernet, arch: Arch, data: ImageData, **kwargs: Any) -> float:
    """Top-1 on the validation split after recalibrating BatchNorm for `arch` (see `proxy_score`)."""
    return proxy_score(net, arch, data, **kwargs).top1


@torch.no_grad()
def measure(model: nn.Module, dataset: Any) -> Score:
    """Top-1 and mean cross-entropy of `model` (in eval mode) on `dataset`."""
    model.eval()
    device = next(model.parameters()).device
    correct, losses = [], []
    for images, labels in loader(dataset, 256, 0, shuffle=False):
        logits = model(images.to(device)).cpu()
        correct.append((logits.argmax(dim=-1) == labels).double())
        losses.append(F.cross_entropy(logits, labels, reduction="none").double())
    hits, loss = torch.cat(correct), torch.cat(losses)
    n = len(hits)
    spread = (float(hits.std()), float(loss.std())) if n > 1 else (math.nan, math.nan)
    return Score(float(hits.mean()), float(loss.mean()), spread[0] / math.sqrt(n), spread[1] / math.sqrt(n))


def top1(model: nn.Module, dataset: Any) -> float:
    """Top-1 of `model` (in eval mode) on `dataset`."""
    return measure(model, dataset).top1
