"""Does the search's pick hold up when trained longer, and does starting from the supernet help?

`lglsearch train`'s recipe (AdamW, cosine with warm-up, label smoothing 0.1) on the embedded proxy
at 64 px, for the most accurate member of the committed example family (runs/snapdragon888-30ms)
and for EdgeViT-XXS, 3 and 10 epochs each, and the pick for 3 epochs from the supernet's inherited
weights (`--init supernet:DIR`, the search's default supernet). Each model is scored on the proxy's
5,000 validation images (what `lglsearch train` reports) and on Fashion-MNIST's 10,000 test images,
which no proxy split holds. Raw results: benchmarks/train/results.json; `report` prints them.

    python benchmarks/train_figures.py run [--seeds 0 1] [--shard K/N]   # resumable; N one-thread processes
    python benchmarks/train_figures.py throughput          # images/s of XXS at 64 px (an idle machine)
    python benchmarks/train_figures.py report
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd
import torch
from shards import mine, record, shard_arg

from lglsearch.space import PRESETS, parse_arch
from lglsearch.train.data import load_data
from lglsearch.train.loop import fit
from lglsearch.train.recipe import Recipe, TrainConfig
from lglsearch.train.scoring import measure
from lglsearch.train.supernet import train_supernet
from lglsearch.train.trainer import train_arch

HERE = Path(__file__).parent / "train"
RESULTS = HERE / "results.json"
HELDOUT = Path(__file__).parents[1].parent / "shared" / "data" / "fashion-mnist"
FAMILY = Path(__file__).parents[1] / "runs" / "snapdragon888-30ms"
RESOLUTION = 64
EMPTY: dict = {"trainings": {}}


def pick() -> str:
    """The family member with the highest estimated accuracy."""
    front = pd.read_csv(FAMILY / "pareto.csv")
    return str(front.sort_values("accuracy").iloc[-1]["arch_id"])


def jobs() -> list[tuple[str, str, int, str | None]]:
    """(name, arch spec, epochs, init) of every training."""
    best = str(FAMILY / "family" / f"{pick()}.json")
    supernet = train_supernet(TrainConfig(), progress=False).directory  # the search's default (cached)
    return [
        ("pick-3", best, 3, None),
        ("xxs-3", "edgevit_xxs", 3, None),
        ("pick-3-supernet", best, 3, f"supernet:{supernet}"),
        ("pick-10", best, 10, None),
        ("xxs-10", "edgevit_xxs", 10, None),
    ]


def run(shard: tuple[int, int], out: Path, seeds: list[int]) -> None:
    done = json.loads(RESULTS.read_text())["trainings"] if RESULTS.is_file() else {}
    data = load_data(None, RESOLUTION)
    heldout = load_data(HELDOUT, RESOLUTION).val
    todo = [(f"{name}/seed{seed}", spec, epochs, init, seed) for seed in seeds for name, spec, epochs, init in jobs()]
    for name, spec, epochs, init, seed in mine(todo, shard):
        if name in done:
            continue
        deployed = parse_arch(spec)
        arch = deployed.replace(resolution=RESOLUTION, num_classes=data.num_classes)
        directory = out / name.replace("/", "-")
        trained = train_arch(
            arch, data, Recipe(epochs=epochs, seed=seed), directory, init=init,
            resume=(directory / "checkpoint.pt").exists(), accelerator="cpu", progress=False,
        )  # fmt: skip
        held = measure(trained.model, heldout)
        last = trained.metrics[-1]
        value = {
            "arch_id": deployed.id,
            "epochs": epochs,
            "init": init and init.split(":")[0],
            "val_top1": last["val_top1"],
            "val_top1_se": last["val_top1_se"],
            "heldout_top1": held.top1,
            "heldout_top1_se": held.top1_se,
            "heldout_loss": held.loss,
            "images_per_s": sum(m["images_per_s"] for m in trained.metrics) / len(trained.metrics),
            "seed": seed,
            "train_seconds": round(sum(m["seconds"] for m in trained.metrics), 1),  # the epochs alone, resumed or not
            "threads": torch.get_num_threads(),
        }
        record(RESULTS, ["trainings", name], value, empty=EMPTY)
        print(f"{name}: val {100 * value['val_top1']:.2f}%, held-out {100 * held.top1:.2f}%", flush=True)


def throughput(steps: int = 30) -> None:
    """Training images/s of XXS at 64 px, batch 64, on this machine's threads (run it idle)."""
    data = load_data(None, RESOLUTION)
    arch = PRESETS["edgevit_xxs"].replace(resolution=RESOLUTION, num_classes=data.num_classes)
    from lglsearch.nn import build_model

    model = build_model(arch)
    fit(model, data, Recipe(epochs=1, max_steps_per_epoch=3, warmup_epochs=0), evaluate=False, progress=False)
    result = fit(model, data, Recipe(epochs=1, max_steps_per_epoch=steps, warmup_epochs=0), evaluate=False,
                 progress=False)  # fmt: skip
    rate = result.metrics[-1]["images_per_s"]
    value = {"images_per_s": rate, "steps": steps, "batch": 64, "threads": torch.get_num_threads()}
    record(RESULTS, ["throughput", "edgevit_xxs@64"], value, empty=EMPTY)
    print(f"edgevit_xxs @64 px: {rate:.0f} training images/s ({torch.get_num_threads()} threads, batch 64)")


def report() -> None:
    results = json.loads(RESULTS.read_text())
    for name, r in results.get("throughput", {}).items():
        print(f"throughput {name}: {r['images_per_s']:.0f} images/s ({r['threads']} threads, batch {r['batch']})")
    rows = pd.DataFrame([{"training": k.split("/")[0], **v} for k, v in results["trainings"].items()]).sort_values(
        ["training", "seed"]
    )
    print("top-1 in %, each seed (proxy val, 5,000 images / held-out, 10,000), then the mean and its se over seeds")
    for name, group in rows.groupby("training", sort=False):
        held = 100 * group["heldout_top1"]
        seeds = "  ".join(f"s{r.seed}: {100 * r.val_top1:.2f} / {100 * r.heldout_top1:.2f}" for r in group.itertuples())
        se = held.std(ddof=1) / math.sqrt(len(held)) if len(held) > 1 else math.nan
        print(
            f"  {name:16s} {group['arch_id'].iloc[0]}  {seeds}   held-out mean {held.mean():.2f} (se {se:.2f}), "
            f"{group['train_seconds'].mean():.0f} s"
        )
    by = rows.pivot(index="seed", columns="training", values="heldout_top1")
    for a, b in (("pick-3", "xxs-3"), ("pick-10", "xxs-10"), ("pick-3-supernet", "pick-3"), ("pick-10", "pick-3")):
        if a in by and b in by:
            diff = 100 * (by[a] - by[b]).dropna()
            se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
            print(f"  {a} - {b}: held-out {diff.mean():+.2f} points (paired over {len(diff)} seed(s), se {se:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--shard", type=shard_arg, default=(0, 1), metavar="K/N")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    sub.add_parser("throughput")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.command == "run":
        run(args.shard, args.out, args.seeds)
    elif args.command == "throughput":
        throughput()
    else:
        report()


if __name__ == "__main__":
    main()
