"""Training the proxy supernet (cached, resumable) and reading a trained one.

Training follows the sandwich rule (Yu et al., BigNAS / "Universally slimmable networks"): every
step trains the largest arch, the smallest and `n_random` random archs on the labels, and takes one
AdamW step on the summed gradients. With `distill`, the smaller archs learn the largest's soft
predictions instead (in-place distillation, as in BigNAS); on the 3-epoch proxy that made the
inherited weights rank archs worse (benchmarks/RESULTS.md), so it is off by default. The learning
rate follows a cosine schedule with warm-up (timm's scheduler). A
checkpoint is written atomically after every epoch and training resumes from it, so an
interruption loses at most the current epoch. Trained supernets are cached under the user cache,
keyed by what determines them (space, data, resolution, budget, seed, recipe), so a search reuses
one instead of training again.

The loop is `lglsearch.train.loop.fit`; the sandwich is its step. The proxy accuracy of an arch
of the trained supernet is `lglsearch.train.scoring.proxy_score`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lglsearch._files import atomic_save_torch, atomic_write, cache_dir
from lglsearch._rng import seeded
from lglsearch.errors import LglsearchError
from lglsearch.nn.edgevit import check_shapes, check_state_dict
from lglsearch.nn.supernet import Supernet
from lglsearch.space import Space, load_space
from lglsearch.train._distributed import placement
from lglsearch.train.checkpoint import load_training_checkpoint
from lglsearch.train.data import ImageData, load_data, loader
from lglsearch.train.loop import fit, make_optimizer, steps_per_epoch
from lglsearch.train.recipe import TrainConfig

__all__ = ["CHECKPOINT", "TrainedSupernet", "epochs_for_minutes", "load_supernet", "supernet_dir", "train_supernet"]

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainedSupernet:
    net: Supernet
    config: TrainConfig
    data: ImageData
    directory: Path
    epochs_done: int


def supernet_dir() -> Path:
    return cache_dir() / "supernets"


def _resolve(config: TrainConfig) -> tuple[Space, ImageData]:
    data = load_data(config.data, config.resolution)
    space = load_space(config.space).with_resolution(config.resolution, data.num_classes)
    return space, data


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
    where = placement(accelerator)
    progress = progress and where.main
    space, data = _resolve(config)
    directory = out or supernet_dir() / config.key(space, data.source, where.world)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / CHECKPOINT
    # the checkpoint is checked against the whole recipe before anything that describes it is written
    state = _read_checkpoint(checkpoint, config, space, where.world) if checkpoint.is_file() else None
    torch.manual_seed(config.seed)
    net = Supernet(space)  # of the user's space, which the checkpoint's recorded one equals (checked above)
    if state is not None:  # its tensors against the supernet's, before anything loads them
        check_shapes(net, state["net"], f"supernet checkpoint {checkpoint}", _RETRAIN, what="space")
    net = net.to(where.device)
    if where.main:
        extra = {"data_source": data.source, "space_resolved": space.to_dict(), "world": where.world}
        atomic_write(directory / "config.json", json.dumps(dataclasses.asdict(config) | extra, indent=2))
    start_epoch = 0 if state is None else state["epoch"]
    if progress and 0 < start_epoch < config.epochs:
        print(f"lglsearch: resuming the supernet at epoch {start_epoch + 1} from {checkpoint}", file=sys.stderr)
    if progress and start_epoch == 0:  # (a cached, finished supernet says nothing)
        print(
            f"lglsearch: training a supernet ({config.epochs} epochs; the default takes minutes on a CPU) "
            f"into {directory}, kept for reuse",
            file=sys.stderr,
        )

    def save(saved: dict[str, Any]) -> None:  # the supernet's own checkpoint layout (its cached files have it)
        atomic_save_torch(
            {
                "net": saved["state_dict"],
                "optimizer": saved["optimizer"],
                "epoch": saved["epoch"],
                "config": dataclasses.asdict(config),
                "space": space.to_dict(),
                "world": where.world,
            },
            checkpoint,
        )

    resume = (
        None
        if state is None
        else {"state_dict": state["net"], "optimizer": state["optimizer"], "epoch": state["epoch"]}
    )
    fit(
        net,
        data,
        config,
        step=_Sandwich(space, config),
        where=where,
        state=resume,
        on_epoch=save,
        evaluate=False,
        progress=progress,
        desc="supernet",
    )
    where.close()
    return TrainedSupernet(net.cpu().eval(), config, data, directory, config.epochs)


class _Sandwich:
    """The loop's step: the largest arch, the smallest and `n_random` sampled ones on one batch."""

    def __init__(self, space: Space, config: TrainConfig) -> None:
        self.space, self.n_random, self.distill = space, config.n_random, config.distill
        self.passes = 2 + config.n_random

    def __call__(self, model: Supernet, images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator) -> float:
        return _sandwich_step(model, self.space, images, labels, rng, self.n_random, self.distill)


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
    batches = iter(loader(data.train, config.batch_size, config.seed, shuffle=True))
    rng = np.random.default_rng(config.seed)

    def step() -> None:
        images, labels = next(batches)
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


_RETRAIN = "it was not written by this version of lglsearch: retrain it, or pass another --out"


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A supernet checkpoint with its recorded contents' types checked (nothing is built from it yet)."""
    state = load_training_checkpoint(path, "supernet", ("net", "epoch", "space"))
    kinds = {"space": dict, "epoch": int, "config": dict, "optimizer": dict, "world": int}
    for key, kind in kinds.items():
        if key in state and (not isinstance(state[key], kind) or isinstance(state[key], bool)):
            raise LglsearchError(
                f"supernet checkpoint {path} is not one of lglsearch's: its {key} is a {type(state[key]).__name__}, "
                f"not a {kind.__name__}; {_RETRAIN}"
            )
    check_state_dict(state["net"], f"supernet checkpoint {path}")
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
    try:  # the recorded space is validated (its bounds included) before any supernet is built from it
        trained_space = Space.from_dict(state["space"], source=str(path))
    except (LglsearchError, TypeError, ValueError, OverflowError, RecursionError) as err:
        raise LglsearchError(f"supernet checkpoint {path} describes no valid space: {err}") from None
    if space is not None and space.to_dict() != trained_space.to_dict():
        raise LglsearchError(
            f"the supernet at {directory} was trained for space {trained_space.name!r} "
            f"@{trained_space.resolution}, not {space.name!r} @{space.resolution}"
        )
    with torch.device("meta"):  # its shapes without allocating: tiny tensors cannot make a huge supernet be built
        shapes = Supernet(trained_space)
    check_shapes(shapes, state["net"], f"supernet checkpoint {path}", _RETRAIN, what=f"space {trained_space.name!r}")
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
