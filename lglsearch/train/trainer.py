"""Training one arch properly: the recipe behind `lglsearch train` and every stand-alone training.

The recipe is the one timm users know: AdamW, a per-step cosine schedule with linear warm-up,
label smoothing, an optional EMA of the weights (timm's `ModelEmaV3`), and on CUDA mixed precision
(bfloat16 where the GPU has it, else float16 with a gradient scaler) and channels-last tensors.
Under `torchrun` each process trains a disjoint shard of every epoch through
`DistributedDataParallel`. Epoch e shuffles and augments from seed + e, so a resumed training
draws the same batches as an uninterrupted one.

The loop is `lglsearch.train.loop.fit`. `train_arch` is the command around it: the output directory, the weights to
start from, a checkpoint after every epoch (atomic: an interruption loses at most the epoch under
way), resuming, and the per-epoch metrics.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from lglsearch._files import atomic_save_torch, atomic_write, atomic_write_json
from lglsearch._rng import seeded
from lglsearch.errors import LglsearchError
from lglsearch.nn import EdgeViT, build_model, load_checkpoint
from lglsearch.nn.edgevit import TRAINING_SUMMARY as SUMMARY
from lglsearch.nn.edgevit import check_shapes, check_state_dict, checkpoint_filter_fn
from lglsearch.space import Arch
from lglsearch.train._distributed import placement
from lglsearch.train.checkpoint import load_training_checkpoint
from lglsearch.train.data import ImageData, load_data
from lglsearch.train.loop import Trained, fit
from lglsearch.train.recipe import Recipe

__all__ = ["CHECKPOINT", "arch_and_data", "initial_weights", "train_arch"]

CHECKPOINT = "checkpoint.pt"
_METRICS = "metrics.csv"
_ARCH = "arch.json"


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
        at = net.space.adapt(model.arch)
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


def _check_recorded(state: dict[str, Any], checkpoint: Path, out: Path) -> None:
    """The types of a training checkpoint's recorded contents, checked before any of them is used."""
    kinds = {"identity": dict, "epoch": int, "metrics": list, "optimizer": dict}
    for key, kind in kinds.items():
        value = state.get(key, kind())
        if not isinstance(value, kind) or isinstance(value, bool):
            raise LglsearchError(
                f"training checkpoint {checkpoint} is not one of lglsearch's: its {key} is a {type(value).__name__}, "
                f"not a {kind.__name__}; give another --out than {out}"
            )
    if state["epoch"] < 0:
        raise LglsearchError(f"training checkpoint {checkpoint} records epoch {state['epoch']}; give another --out")
    for key in ("state_dict", "state_dict_ema"):
        if key in state:
            check_state_dict(state[key], f"training checkpoint {checkpoint} ({key})")


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


def arch_and_data(deployed: Arch, data: str | None, resolution: int | None) -> tuple[Arch, ImageData]:
    """The arch to train and its data: `deployed` at `resolution` (by default 64 px for the proxy and
    IDX data, the arch's own for an ImageFolder) and with the data's class count."""
    image_folder = data is not None and (Path(data) / "train").is_dir()
    resolution = resolution or (deployed.resolution if image_folder else 64)
    images = load_data(data, resolution)
    try:
        return deployed.replace(resolution=resolution, num_classes=images.num_classes), images
    except LglsearchError as err:
        raise LglsearchError(
            f"arch {deployed.id} cannot be trained at --resolution {resolution}: {err}; give a resolution its "
            f"token grids fit (its own is {deployed.resolution})"
        ) from None


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
        _check_recorded(state, checkpoint, out)
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
    if state is not None:  # the checkpoint's tensors against this model's, before anything loads them
        fix = f"it was not written for this arch ({arch.id}): give another --out to start a new training"
        if recipe.ema_decay is not None and "state_dict_ema" not in state:
            raise LglsearchError(f"training checkpoint {checkpoint} holds no EMA weights (state_dict_ema); {fix}")
        for key in ("state_dict", "state_dict_ema"):
            if key in state:
                check_shapes(model, state[key], f"training checkpoint {checkpoint} ({key})", fix)
    loaded = initial_weights(model, init) if init and state is None else init

    def save(saved: dict[str, Any]) -> None:  # arch.json only once an epoch has been trained: a failure leaves none
        out.mkdir(parents=True, exist_ok=True)
        atomic_save_torch(saved | {"identity": identity, "arch": arch.to_dict()}, checkpoint)
        atomic_write(out / _METRICS, pd.DataFrame(saved["metrics"]).to_csv(index=False))
        atomic_write(out / _ARCH, arch.to_json() + "\n")

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
