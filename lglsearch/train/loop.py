"""The one training loop, shared by stand-alone archs and the supernet.

A recipe's epochs of AdamW steps on a per-step cosine schedule with linear warm-up (timm's
scheduler). Epoch e seeds torch and a numpy generator with seed + e and shuffles its batches from
it, so a resumed training draws the same batches, augmentations and sub-archs as an uninterrupted
one. After every epoch the caller gets the state to save (the loop writes nothing itself).

A `Step` says how one batch makes gradients. The default is the stand-alone recipe: label-smoothed
cross-entropy, on CUDA in mixed precision (bfloat16 where the GPU has it, else float16 with a
gradient scaler) and channels-last, under `torchrun` through `DistributedDataParallel`. A custom
step (the supernet's sandwich) runs in float32 and may take several backward passes through a
network whose unused parts change from step to step, so its gradients are averaged once per step
(`average_gradients`) instead of by DDP.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from lglsearch.errors import LglsearchError
from lglsearch.train._distributed import Placement, average_gradients, placement
from lglsearch.train.data import ImageData, loader
from lglsearch.train.recipe import Schedule
from lglsearch.train.scoring import measure

__all__ = [
    "Step",
    "Trained",
    "fit",
    "make_optimizer",
    "steps_per_epoch",
]


class Step(Protocol):
    """How one batch makes gradients: forward and backward passes (the loop then averages the
    gradients over processes and takes the optimiser step); returns the loss to show."""

    passes: int  # forward passes an image makes in one step: the progress bar counts images through the net

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> float: ...


@dataclass
class Trained:
    model: nn.Module  # on the CPU, in eval mode; the EMA weights when there is an EMA
    metrics: list[dict[str, Any]]

    def top1(self) -> tuple[float, float]:
        """The result's validation top-1 and its standard error: the EMA's where there is one."""
        last = self.metrics[-1]
        if "ema_val_top1" in last:
            return last["ema_val_top1"], last["ema_val_top1_se"]
        return last["val_top1"], last["val_top1_se"]


def _epoch_loader(data: ImageData, recipe: Schedule, epoch: int, where: Placement) -> DataLoader:
    """This process's batches of an epoch: all of them alone, a disjoint shard under torchrun."""
    if where.world == 1:
        return loader(data.train, recipe.batch_size, recipe.seed + epoch, shuffle=True)
    shard = DistributedSampler(
        data.train, num_replicas=where.world, rank=where.rank, shuffle=True, seed=recipe.seed + epoch, drop_last=True
    )
    return DataLoader(
        data.train, batch_size=recipe.batch_size, sampler=shard, drop_last=True, pin_memory=where.device.type == "cuda"
    )


def steps_per_epoch(recipe: Schedule, data: ImageData, world: int = 1) -> int:
    steps = min(len(data.train) // (recipe.batch_size * world), recipe.max_steps_per_epoch or 10**9)
    if steps < 1:
        raise LglsearchError(
            f"the training split holds {len(data.train)} image(s), fewer than one batch of {recipe.batch_size}"
            f"{f' x {world} processes' if world > 1 else ''}; lower --batch-size"
        )
    return steps


def make_optimizer(model: nn.Module, recipe: Schedule, steps: int) -> tuple[torch.optim.Optimizer, CosineLRScheduler]:
    """AdamW and a per-step cosine schedule with linear warm-up: the recipe of every training here."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=recipe.epochs * steps,
        warmup_t=recipe.warmup_epochs * steps,
        warmup_lr_init=recipe.lr / 100,
        lr_min=recipe.lr / 100,
        t_in_epochs=False,
    )
    return optimizer, scheduler


def fit(
    model: nn.Module,
    data: ImageData,
    recipe: Schedule,
    *,
    step: Step | None = None,
    where: Placement | None = None,
    state: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    evaluate: bool = True,
    progress: bool = True,
    desc: str = "train",
) -> Trained:
    """Train `model` with `recipe` from epoch 0, or from the checkpoint `state` of an earlier call.

    `step` defaults to cross-entropy with the recipe's label smoothing; with its `ema_decay` an EMA
    of the weights (timm's `ModelEmaV3`) is kept and returned. After each epoch `on_epoch(state)`
    gets the state to save, its metrics so far included (the main process only). With `evaluate`,
    each epoch ends with top-1 and cross-entropy on `data.val`.
    """
    where = where or placement("cpu")
    device = where.device
    mixed = step is None and device.type == "cuda"  # a custom step keeps its own float32 numerics
    model = model.to(device)
    if mixed:
        model = model.to(memory_format=torch.channels_last)
    steps = steps_per_epoch(recipe, data, where.world)
    optimizer, scheduler = make_optimizer(model, recipe, steps)
    amp_dtype = torch.bfloat16 if mixed and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=mixed and amp_dtype == torch.float16)
    # warm-up: the decay ramps with the steps taken, so a short training is not averaged with its initial weights
    ema = ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema_decay is not None else None
    metrics: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:  # the supernet's checkpoints hold none (its scaler is never enabled)
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["state_dict_ema"])
        start, metrics = state["epoch"], list(state.get("metrics", []))
    if step is None:
        trained = (
            nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            if where.world > 1
            else model
        )
        step = _CrossEntropy(trained, recipe.label_smoothing, amp_dtype if mixed else None, scaler)
        sync: Callable[[], None] = lambda: None  # noqa: E731 (DDP averaged the gradients during backward)
    else:
        trained = model
        sync = lambda: average_gradients(model, where)  # noqa: E731
    progress = progress and where.main
    for epoch in range(start, recipe.epochs):
        rng = np.random.default_rng(recipe.seed + epoch)  # the sub-archs a step draws
        torch.manual_seed(recipe.seed + epoch)  # dropout, drop-path and the augmentations of this epoch
        trained.train()
        bar = tqdm(
            total=steps,
            desc=f"{desc} epoch {epoch + 1}/{recipe.epochs}",
            unit="step",
            disable=not progress,
            file=sys.stderr,
        )
        seen, losses, started = 0, [], time.perf_counter()
        for index, (images, labels) in enumerate(_epoch_loader(data, recipe, epoch, where)):
            if index >= steps:
                break
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if mixed:
                images = images.contiguous(memory_format=torch.channels_last)
            losses.append(step(model, images, labels, rng))
            sync()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update(epoch * steps + index + 1)
            if ema is not None:
                ema.update(model, step=epoch * steps + index)
            seen += len(labels) * where.world
            rate = seen * step.passes / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", img_s=f"{rate:.0f}")
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - started
        if not where.main:
            continue
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": sum(losses) / len(losses),
            "lr": optimizer.param_groups[0]["lr"],
            "images_per_s": seen / seconds,
            "seconds": seconds,
        }
        if evaluate:
            score = measure(model, data.val)
            row |= {"val_top1": score.top1, "val_top1_se": score.top1_se, "val_loss": score.loss}
            if ema is not None:
                score = measure(ema.module, data.val)
                row |= {"ema_val_top1": score.top1, "ema_val_top1_se": score.top1_se, "ema_val_loss": score.loss}
        metrics.append(row)
        if progress:
            shown = f", val top-1 {100 * row['val_top1']:.2f}%" if evaluate else ""
            print(
                f"{desc} epoch {epoch + 1}/{recipe.epochs}: loss {row['train_loss']:.4f}{shown}, "
                f"{row['images_per_s']:.0f} images/s",
                file=sys.stderr,
            )
        if on_epoch is not None:
            saved = {
                "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch + 1,
                "metrics": metrics,
            }
            if ema is not None:  # timm's `create_model(checkpoint_path=...)` prefers this key, as `export` does
                saved["state_dict_ema"] = ema.module.state_dict()
            on_epoch(saved)
    final = ema.module if ema is not None else model
    return Trained(final.to(memory_format=torch.contiguous_format).cpu().eval(), metrics)


class _CrossEntropy:
    """The stand-alone step: (label-smoothed) cross-entropy, in mixed precision where `amp_dtype` is set."""

    passes = 1

    def __init__(
        self, net: nn.Module, label_smoothing: float, amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler
    ) -> None:
        self.net, self.label_smoothing, self.amp_dtype, self.scaler = net, label_smoothing, amp_dtype, scaler

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> float:
        # `self.net` is `model`, or its DDP wrapper under torchrun
        with torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext():
            loss = F.cross_entropy(self.net(images), labels, label_smoothing=self.label_smoothing)
        self.scaler.scale(loss).backward()
        return loss.item()
