"""Training the proxy supernet, and the proxy accuracy of any arch of its space.

Training follows the sandwich rule (Yu et al., BigNAS / "Universally slimmable networks"): every
step trains the largest arch, the smallest and `n_random` random archs on the labels, and takes one
AdamW step on the summed gradients. With `distill`, the smaller archs learn the largest's soft
predictions instead (in-place distillation, as in BigNAS); on the 3-epoch proxy that made the
inherited weights rank archs worse (Kendall tau 0.17 against 0.29-0.30), so it is off by default.
The learning rate follows a cosine schedule with warm-up (timm's scheduler). A
checkpoint is written atomically after every epoch and training resumes from it, so an
interruption loses at most the current epoch. Trained supernets are cached under the user cache,
keyed by what determines them (space, data, resolution, budget, seed, recipe), so a search reuses
one instead of training again.

`accuracy(arch)` recalibrates BatchNorm statistics for the arch on a few unaugmented training
batches (the shared running statistics belong to no single arch), then measures top-1 on the
validation split; with a seed it is deterministic. `proxy_score(arch)` gives the validation
cross-entropy beside it: a smoother score than top-1 on a small validation split. Given
`finetune_steps`, the arch is extracted and trained that many steps on its own before it is
scored: an arch's inherited weights are a compromise shared with every other arch, and a short
fine-tune moves them towards its own, at some seconds an arch on a CPU (benchmarks/RESULTS.md
measures how each score ranks stand-alone accuracy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset
from tqdm import tqdm

from lglsearch.errors import LglsearchError
from lglsearch.io import atomic_save_torch, atomic_write
from lglsearch.nn.supernet import Supernet
from lglsearch.rng import seeded
from lglsearch.space import Arch, Space, load_space
from lglsearch.train.data import ImageData, balanced_subset, load_data
from lglsearch.train.distributed import Placement, average_gradients, placement

__all__ = [
    "Score",
    "TrainConfig",
    "TrainedSupernet",
    "accuracy",
    "calibration_images",
    "epochs_for_minutes",
    "evaluate",
    "finetune",
    "load_supernet",
    "load_training_checkpoint",
    "make_optimizer",
    "materialise",
    "measure",
    "proxy_score",
    "proxy_scores",
    "recalibrated",
    "steps_per_epoch",
    "supernet_dir",
    "train_supernet",
]

CHECKPOINT = "checkpoint.pt"
FINETUNE_LR = 1e-3  # constant, AdamW: the rate the ranking benchmark measured


class Schedule(Protocol):
    """What the optimiser, the schedule and the epoch loader read of a recipe: a supernet's
    `TrainConfig` or a stand-alone `Recipe` (lglsearch.train.trainer)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    seed: int


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained supernet (and so its cache key)."""

    space: str | None = None  # a space file or shipped name; None = the default space
    data: str | None = None  # None = the embedded proxy
    resolution: int = 64
    epochs: int = 3  # the default supernet: about 10 minutes on this 2-core machine (64 px, batch 64)
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    n_random: int = 1  # with the largest and smallest: 3 sub-archs a step keeps the default within 12 min
    # in-place distillation (the other archs learn the largest's soft predictions): off by default,
    # labels rank archs better on the proxy (benchmarks/RESULTS.md, "Proxy supernet")
    distill: bool = False
    seed: int = 0
    max_steps_per_epoch: int | None = None  # a quick mode for tests and demos

    def key(self, space: Space, data_source: str, world: int = 1) -> str:
        """A short hash of the resolved space, data and recipe (and the process count under torchrun)."""
        recipe = dataclasses.asdict(self) | {"space": space.to_dict(), "data": data_source}
        if self.distill:  # the recipe before the option existed (it distilled): its supernets keep their keys
            del recipe["distill"]
        if world > 1:  # each process takes a batch: a different global batch and schedule
            recipe["world"] = world
        return hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class TrainedSupernet:
    net: Supernet
    config: TrainConfig
    data: ImageData
    directory: Path
    epochs_done: int


def supernet_dir() -> Path:
    from lglsearch.io import cache_dir

    return cache_dir() / "supernets"


def _resolve(config: TrainConfig) -> tuple[Space, ImageData]:
    data = load_data(config.data, config.resolution)
    space = load_space(config.space).with_resolution(config.resolution, data.num_classes)
    return space, data


def _loader(dataset: Any, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def train_supernet(
    config: TrainConfig, out: Path | None = None, *, progress: bool = True, accelerator: str = "auto"
) -> TrainedSupernet:
    """Train (or resume, or reuse from the cache) the supernet `config` describes.

    On the CPU, a CUDA GPU (`accelerator` auto picks one when present), or under `torchrun` as
    several processes averaging their gradients; the returned network is on the CPU.
    """
    with seeded(config.seed):  # seeded again inside; the caller's random state is left as it was
        return _train_supernet(config, out, progress=progress, accelerator=accelerator)


def _train_supernet(config: TrainConfig, out: Path | None, *, progress: bool, accelerator: str) -> TrainedSupernet:
    if config.epochs < 1:
        raise LglsearchError(f"epochs must be >= 1, got {config.epochs}")
    where = placement(accelerator)
    progress = progress and where.main
    space, data = _resolve(config)
    directory = out or supernet_dir() / config.key(space, data.source, where.world)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / CHECKPOINT
    # the checkpoint is checked against the whole recipe before anything that describes it is written
    state = _read_checkpoint(checkpoint, config, space, where.world) if checkpoint.is_file() else None
    if where.main:
        extra = {"data_source": data.source, "space_resolved": space.to_dict(), "world": where.world}
        atomic_write(directory / "config.json", json.dumps(dataclasses.asdict(config) | extra, indent=2))
    torch.manual_seed(config.seed)
    net = Supernet(space).to(where.device)
    steps = steps_per_epoch(config, data, where.world)
    optimizer, scheduler = make_optimizer(net, config, steps)
    start_epoch = 0
    if state is not None:
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
        if progress and start_epoch < config.epochs:
            print(f"lglsearch: resuming the supernet at epoch {start_epoch + 1} from {checkpoint}", file=sys.stderr)
    if progress and start_epoch == 0:  # (a cached, finished supernet says nothing)
        print(
            f"lglsearch: training a supernet ({config.epochs} epochs; the default takes about 11 minutes on 2 cores) "
            f"into {directory}, kept for reuse",
            file=sys.stderr,
        )
    for epoch in range(start_epoch, config.epochs):
        # seeded per epoch, so a resumed run draws the same archs and augmentations as an uninterrupted one
        rng = np.random.default_rng(config.seed + epoch)
        torch.manual_seed(config.seed + epoch)
        net.train()
        bar = tqdm(
            total=steps,
            desc=f"supernet epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=not progress,
            file=sys.stderr,
        )
        seen, started = 0, time.perf_counter()
        for step, (images, labels) in enumerate(_epoch_loader(data, config, epoch, where)):
            if step >= steps:
                break
            images, labels = images.to(where.device, non_blocking=True), labels.to(where.device, non_blocking=True)
            loss = _sandwich_step(net, space, images, labels, rng, config.n_random, config.distill)
            average_gradients(net, where)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step_update(epoch * steps + step + 1)
            seen += len(labels) * where.world
            bar.set_postfix(
                loss=f"{loss:.3f}", img_s=f"{seen * (2 + config.n_random) / (time.perf_counter() - started):.0f}"
            )
            bar.update(1)
        bar.close()
        if where.main:
            atomic_save_torch(
                {
                    "net": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "config": dataclasses.asdict(config),
                    "space": space.to_dict(),
                    "world": where.world,
                },
                checkpoint,
            )
    where.close()
    return TrainedSupernet(net.cpu().eval(), config, data, directory, config.epochs)


def _epoch_loader(data: ImageData, config: Schedule, epoch: int, where: Placement) -> DataLoader:
    """This process's batches of an epoch: all of them alone, a disjoint shard under torchrun."""
    if where.world == 1:
        return _loader(data.train, config.batch_size, config.seed + epoch, shuffle=True)
    shard = DistributedSampler(
        data.train, num_replicas=where.world, rank=where.rank, shuffle=True, seed=config.seed + epoch, drop_last=True
    )
    return DataLoader(
        data.train, batch_size=config.batch_size, sampler=shard, drop_last=True, pin_memory=where.device.type == "cuda"
    )


def steps_per_epoch(config: TrainConfig, data: ImageData, world: int = 1) -> int:
    return min(len(data.train) // (config.batch_size * world), config.max_steps_per_epoch or 10**9)


def make_optimizer(model: nn.Module, config: Schedule, steps: int) -> tuple[torch.optim.Optimizer, CosineLRScheduler]:
    """AdamW and a per-step cosine schedule with linear warm-up: the recipe of every training here."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=config.epochs * steps,
        warmup_t=config.warmup_epochs * steps,
        warmup_lr_init=config.lr / 100,
        lr_min=config.lr / 100,
        t_in_epochs=False,
    )
    return optimizer, scheduler


def epochs_for_minutes(config: TrainConfig, minutes: float, *, probe_steps: int = 3, accelerator: str = "auto") -> int:
    """How many epochs of `config` fit in `minutes` on this machine, from timing a few steps."""
    if minutes <= 0:
        raise LglsearchError(f"minutes must be > 0, got {minutes}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LglsearchError("--minutes times one process alone; under torchrun give --epochs")
    device = placement(accelerator).device
    space, data = _resolve(config)
    net = Supernet(space).to(device).train()
    optimizer, _ = make_optimizer(net, config, 1)
    loader = iter(_loader(data.train, config.batch_size, config.seed, shuffle=True))
    rng = np.random.default_rng(config.seed)

    def step() -> None:
        images, labels = next(loader)
        _sandwich_step(net, space, images.to(device), labels.to(device), rng, config.n_random, config.distill)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(probe_steps):
        step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - started) / probe_steps
    return max(1, int(minutes * 60 / (per_step * steps_per_epoch(config, data))))


def _sandwich_step(
    net: Supernet,
    space: Space,
    images: torch.Tensor,
    labels: torch.Tensor,
    rng: np.random.Generator,
    n_random: int,
    distill: bool,
) -> float:
    logits = net.set_arch(space.largest())(images)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    soft = F.softmax(logits.detach(), dim=-1) if distill else None
    total = loss.item()
    for arch in [space.smallest(), *(space.sample(rng) for _ in range(n_random))]:
        out = net.set_arch(arch)(images)
        if distill:
            loss = F.kl_div(F.log_softmax(out, dim=-1), soft, reduction="batchmean")
        else:
            loss = F.cross_entropy(out, labels)
        loss.backward()
        total += loss.item()
    return total


def _load_checkpoint(path: Path) -> dict[str, Any]:
    return load_training_checkpoint(path, "supernet", ("net", "epoch", "space"))


def load_training_checkpoint(path: Path, kind: str, required: tuple[str, ...]) -> dict[str, Any]:
    """A checkpoint file's contents, read as tensors and plain data only: a training directory may
    come from anyone, and a full unpickling would run whatever code it holds. `kind` names the
    training in errors; `required` are the keys its checkpoints always hold."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused an object: not a plain checkpoint
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LglsearchError(
            f"refused to load {path}: it holds objects other than tensors and plain data ({reason}); "
            "lglsearch's checkpoints never do, so do not trust this file"
        ) from None
    except OSError as err:  # the file system, not the file: nothing to delete
        raise LglsearchError(f"could not read {kind} checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # a truncated or foreign file: torch's zip reader and unpickler raise many types
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LglsearchError(
            f"{kind} checkpoint {path} is corrupt: unreadable as a checkpoint ({reason}); "
            "delete it to retrain, or pass another --out"
        ) from None
    if not isinstance(state, dict) or set(required) - set(state):
        raise LglsearchError(
            f"{path} is not one of lglsearch's {kind} checkpoints (no {', '.join(required[:-1])} and "
            f"{required[-1]}); pass another --out"
        )
    return state


def _read_checkpoint(path: Path, config: TrainConfig, space: Space, world: int) -> dict[str, Any]:
    """The checkpoint to resume, refused unless it was trained with exactly this recipe."""
    state = _load_checkpoint(path)
    if "optimizer" not in state:
        raise LglsearchError(f"{path} holds no optimizer state and cannot be resumed; pass another --out")
    if state["space"] != space.to_dict():
        raise LglsearchError(
            f"supernet checkpoint {path} was trained for another space ({state['space'].get('name')}); "
            "pass that space, or another --out"
        )
    now = dataclasses.asdict(config) | {"world": world}
    # `distill` is newer than some checkpoints, which all distilled; `world` is absent from single-process ones
    then = {"distill": True, "world": 1} | state.get("config", {}) | {"world": state.get("world", 1)}
    # the space is compared resolved (above) and the data by the cache key: a name and a path of the same
    # space or data are one recipe
    changed = [k for k in now if k not in ("space", "data") and then.get(k) != now[k]]
    if changed:
        what = "; ".join(f"{k}: {then.get(k)} then, {now[k]} now" for k in changed)
        raise LglsearchError(
            f"supernet checkpoint {path} was trained with another recipe ({what}); "
            "rerun with the same options to resume it, or pass another --out"
        )
    return state


def load_supernet(directory: str | Path, space: Space | None = None) -> Supernet:
    """A trained supernet from its directory, checked against `space` when given."""
    path = Path(directory) / CHECKPOINT
    if not path.is_file():
        raise LglsearchError(f"no supernet checkpoint at {path}; train one with `lglsearch supernet train`")
    state = _load_checkpoint(path)
    try:
        trained_space = Space.from_dict(state["space"], source=str(path))
    except LglsearchError as err:
        raise LglsearchError(f"supernet checkpoint {path} describes no valid space: {err}") from None
    if space is not None and space.to_dict() != trained_space.to_dict():
        raise LglsearchError(
            f"the supernet at {directory} was trained for space {trained_space.name!r} "
            f"@{trained_space.resolution}, not {space.name!r} @{space.resolution}"
        )
    net = Supernet(trained_space)
    try:
        net.load_state_dict(state["net"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise LglsearchError(
            f"supernet checkpoint {path} does not match its own space {trained_space.name!r} ({first}); "
            "it was not written by this version of lglsearch: retrain it"
        ) from None
    return net.eval()


def calibration_images(
    data: ImageData, *, calib_batches: int = 8, batch_size: int = 128, seed: int = 0
) -> list[torch.Tensor]:
    """The BatchNorm recalibration batches `accuracy` uses: the same for every arch of a seed."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(data.calib), generator=gen)[: calib_batches * batch_size].tolist()
    return [images for images, _ in _loader(Subset(data.calib, picks), batch_size, seed, shuffle=False)]


def materialise(dataset: Any) -> TensorDataset:
    """A dataset without augmentation as tensors in memory: evaluating many archs transforms it once."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return TensorDataset(torch.stack(images), torch.tensor(labels))


@dataclass(frozen=True)
class Score:
    """What a model scores on a validation split, with the standard errors of its finite size (the
    spread of the per-image values over the square root of their count: what another draw of as many
    images from the same distribution would move the score by)."""

    top1: float
    loss: float  # mean cross-entropy: every image counts by its confidence, not only right or wrong
    top1_se: float = math.nan
    loss_se: float = math.nan


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
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=TrainConfig.weight_decay)  # the recipe's
    model.train()
    with seeded(seed):  # the augmentations; the caller's random state is left as it was
        for step, (images, labels) in enumerate(_loader(data.train, batch_size, seed, shuffle=True)):
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
    for images, labels in _loader(dataset, 256, 0, shuffle=False):
        logits = model(images.to(device)).cpu()
        correct.append((logits.argmax(dim=-1) == labels).double())
        losses.append(F.cross_entropy(logits, labels, reduction="none").double())
    hits, loss = torch.cat(correct), torch.cat(losses)
    n = len(hits)
    spread = (float(hits.std()), float(loss.std())) if n > 1 else (math.nan, math.nan)
    return Score(float(hits.mean()), float(loss.mean()), spread[0] / math.sqrt(n), spread[1] / math.sqrt(n))


def evaluate(model: nn.Module, dataset: Any) -> float:
    """Top-1 of `model` (in eval mode) on `dataset`."""
    return measure(model, dataset).top1
