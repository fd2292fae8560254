"""Training one arch properly: the recipe behind `lglsearch train` and every stand-alone training.

The recipe is the one timm users know: AdamW, a per-step cosine schedule with linear warm-up,
label smoothing, an optional EMA of the weights (timm's `ModelEmaV3`), and on CUDA mixed precision
(bfloat16 where the GPU has it, else float16 with a gradient scaler) and channels-last tensors.
Under `torchrun` each process trains a disjoint shard of every epoch through
`DistributedDataParallel`. Epoch e shuffles and augments from seed + e, so a resumed training
draws the same batches as an uninterrupted one.

`fit` is the loop. `train_arch` is the command around it: the output directory, the weights to
start from, a checkpoint after every epoch (atomic: an interruption loses at most the epoch under
way), resuming, and the per-epoch metrics.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from lglsearch.errors import LglsearchError
from lglsearch.io import atomic_save_torch, atomic_write, atomic_write_json
from lglsearch.nn import EdgeViT, build_model, load_checkpoint
from lglsearch.nn.edgevit import TRAINING_SUMMARY as SUMMARY
from lglsearch.nn.edgevit import checkpoint_filter_fn
from lglsearch.rng import seeded
from lglsearch.space import Arch
from lglsearch.train.data import ImageData
from lglsearch.train.distributed import Placement, placement
from lglsearch.train.supernet import _epoch_loader, load_training_checkpoint, make_optimizer, measure

__all__ = ["CHECKPOINT", "Recipe", "Trained", "fit", "initial_weights", "train_arch"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
ARCH = "arch.json"


@dataclass(frozen=True)
class Recipe:
    """How an arch is trained (everything but the data and the arch)."""

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
        if self.epochs < 1 or self.batch_size < 1:
            raise LglsearchError(f"epochs and batch size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not 0 <= self.label_smoothing < 1:
            raise LglsearchError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise LglsearchError(f"the EMA decay must be in (0, 1), e.g. 0.999, got {self.ema_decay}")


@dataclass
class Trained:
    model: EdgeViT  # on the CPU, in eval mode; the EMA weights when there is an EMA
    metrics: list[dict[str, Any]]

    def top1(self) -> tuple[float, float]:
        """The result's validation top-1 and its standard error: the EMA's where there is one."""
        last = self.metrics[-1]
        if "ema_val_top1" in last:
            return last["ema_val_top1"], last["ema_val_top1_se"]
        return last["val_top1"], last["val_top1_se"]


def steps_per_epoch(recipe: Recipe, data: ImageData, world: int = 1) -> int:
    steps = min(len(data.train) // (recipe.batch_size * world), recipe.max_steps_per_epoch or 10**9)
    if steps < 1:
        raise LglsearchError(
            f"the training split holds {len(data.train)} image(s), fewer than one batch of {recipe.batch_size}"
            f"{f' x {world} processes' if world > 1 else ''}; lower --batch-size"
        )
    return steps


def fit(
    model: nn.Module,
    data: ImageData,
    recipe: Recipe,
    *,
    where: Placement | None = None,
    state: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    evaluate: bool = True,
    progress: bool = True,
    desc: str = "train",
) -> Trained:
    """Train `model` with `recipe` from epoch 0, or from the checkpoint `state` of an earlier call.

    After each epoch `on_epoch(state)` gets the state to save, its metrics so far included (the main
    process only). With `evaluate`, each epoch ends with top-1 and cross-entropy on `data.val`.
    """
    where = where or placement("cpu")
    device = where.device
    cuda = device.type == "cuda"
    model = model.to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    steps = steps_per_epoch(recipe, data, where.world)
    optimizer, scheduler = make_optimizer(model, recipe, steps)
    amp_dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    # warm-up: the decay ramps with the steps taken, so a short training is not averaged with its initial weights
    ema = ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema_decay is not None else None
    metrics: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["state_dict_ema"])
        start, metrics = state["epoch"], list(state["metrics"])
    trained = (
        nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        if where.world > 1
        else model
    )
    progress = progress and where.main
    for epoch in range(start, recipe.epochs):
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
        for step, (images, labels) in enumerate(_epoch_loader(data, recipe, epoch, where)):
            if step >= steps:
                break
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if cuda:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=amp_dtype) if cuda else nullcontext():
                loss = F.cross_entropy(trained(images), labels, label_smoothing=recipe.label_smoothing)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update(epoch * steps + step + 1)
            if ema is not None:
                ema.update(model, step=epoch * steps + step)
            seen += len(labels) * where.world
            losses.append(loss.item())
            rate = seen / (time.perf_counter() - started)
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


# --------------------------------------------------------------------------------------------
# The command: where the weights start, where the results go, resuming


def initial_weights(model: EdgeViT, init: str) -> str:
    """Load `init` into `model`: `supernet:DIR` (the arch's inherited weights) or `checkpoint:FILE`
    (a state dict of this arch, ours or the reference's). A classifier of another class count is
    left freshly initialised, as timm does for pretrained weights; the return value says what was loaded."""
    kind, _, where = init.partition(":")
    if kind not in ("supernet", "checkpoint") or not where:
        raise LglsearchError(f"--init {init!r}: give supernet:DIR or checkpoint:FILE")
    if kind == "supernet":
        from lglsearch.train.supernet import load_supernet

        net = load_supernet(where)
        at = model.arch.replace(resolution=net.space.resolution, num_classes=net.space.num_classes)
        try:
            state = net.extract(at).state_dict()
        except LglsearchError as err:
            raise LglsearchError(f"--init {init}: {err}") from None
    else:
        from lglsearch.export import read_checkpoint

        state = read_checkpoint(where)
    state = checkpoint_filter_fn(state, model)
    note = ""
    head = model.head.weight
    if "head.weight" in state and tuple(state["head.weight"].shape) != tuple(head.shape):
        note = f" (its {state['head.weight'].shape[0]}-class head left out: this data has {head.shape[0]} classes)"
        state = {**state, "head.weight": head.detach().clone(), "head.bias": model.head.bias.detach().clone()}
    load_checkpoint(model, state, source=f"--init {init}")
    return f"{init}{note}"


def _identity(arch: Arch, recipe: Recipe, data: ImageData, init: str | None, world: int) -> dict[str, Any]:
    """What determines a training: a resume must match it."""
    return {
        "arch": arch.to_dict(),
        "recipe": dataclasses.asdict(recipe),
        "data": data.source,
        "init": init,
        "world": world,
    }


def _first_change(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> str | None:
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_change(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} was {a!r}, now {b!r}"
    return None


def train_arch(
    arch: Arch,
    data: ImageData,
    recipe: Recipe,
    out: Path,
    *,
    init: str | None = None,
    resume: bool = False,
    accelerator: str = "auto",
    progress: bool = True,
) -> Trained:
    """Train `arch` (already at the data's resolution and class count) into `out`: `checkpoint.pt`
    after every epoch, `metrics.csv`, `arch.json`; `resume` continues an interrupted training."""
    where = placement(accelerator)
    out = Path(out)
    checkpoint = out / CHECKPOINT
    identity = _identity(arch, recipe, data, init, where.world)
    state = None
    if checkpoint.is_file():
        state = load_training_checkpoint(checkpoint, "training", ("state_dict", "epoch", "identity"))
        if not resume:
            raise LglsearchError(
                f"{out} already holds a training (epoch {state.get('epoch', '?')} of "
                f"{state.get('identity', {}).get('recipe', {}).get('epochs', '?')}); pass --resume to continue it, "
                "or give another --out"
            )
        change = _first_change(state.get("identity", {}), identity)
        if change:
            raise LglsearchError(
                f"--resume with changed arguments: {change}; rerun with the arguments of the training in {out}, "
                "or give another --out to start a new one"
            )
    elif resume:
        raise LglsearchError(f"--resume: no checkpoint at {checkpoint}; leave --resume out to start a training")
    with seeded(recipe.seed):  # the initial weights; the caller's random state is left as it was
        model = build_model(arch)
    loaded = initial_weights(model, init) if init and state is None else init
    if where.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / ARCH, arch.to_json() + "\n")

    def save(saved: dict[str, Any]) -> None:
        atomic_save_torch(saved | {"identity": identity, "arch": arch.to_dict()}, checkpoint)
        atomic_write(out / METRICS, pd.DataFrame(saved["metrics"]).to_csv(index=False))

    if state is not None and state["epoch"] >= recipe.epochs:
        model.load_state_dict(checkpoint_filter_fn(state))  # the EMA weights first, as timm and export read it
        result = Trained(model.eval(), list(state["metrics"]))
    else:
        if progress and where.main and state is not None:
            print(f"lglsearch: resuming at epoch {state['epoch'] + 1} from {checkpoint}", file=sys.stderr)
        result = fit(model, data, recipe, where=where, state=state, on_epoch=save, progress=progress, desc=arch.id)
    if where.main:
        top1, top1_se = result.top1()
        atomic_write_json(
            out / SUMMARY,
            {
                "arch_id": arch.id,
                "top1": top1,
                "top1_se": top1_se,
                "weights": "EMA" if recipe.ema_decay is not None else "final",
                "epochs": recipe.epochs,
                "init": loaded,
                "data": data.source,
                "mean": list(data.mean),
                "std": list(data.std),
                "resolution": arch.resolution,
                "num_classes": arch.num_classes,
                "recipe": dataclasses.asdict(recipe),
                "images_per_s": sum(m["images_per_s"] for m in result.metrics) / len(result.metrics),
                "val_images": len(data.val),
            },
        )
    where.close()
    return result
