"""Search quality judged by the truth: NSGA-II against random search, each family trained stand-alone.

The hypervolume of a front in *proxy* accuracy (benchmarks/search_quality.py) says how well a
sampler optimises the score, not whether the archs it returns are good. Here every member of every
family is trained on its own with the ranking protocol's recipe (benchmarks/ranking.py: 3 epochs
on the proxy's training images, top-1 on Fashion-MNIST's 10,000 held-out test images), and each
family is judged by the hypervolume of its members' stand-alone accuracies against their latency
(reference point: top-1 0, the budget). The samplers are compared over seeds with an exact
permutation test of the mean difference (with 3 seeds a side, the smallest one-sided p is 1/20)
and Welch's t-test beside it; the raw results (every family, every stand-alone accuracy) are
committed in benchmarks/search_truth/results.json, so that `report` recomputes the figures.

    python benchmarks/search_truth.py run [--trials 100] [--seeds 0 1 2]   # resumable
    python benchmarks/search_truth.py train --shard K/N   # the trainings alone, in N one-thread processes
    python benchmarks/search_truth.py report

Searches keep their run directories under --out (git-ignored) and resume; a stand-alone result is
written as soon as it is measured, and an arch in several families is trained once.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import permutation_test, ttest_ind
from shards import mine, record, shard_arg

from lglsearch.search.pareto import front_frame, hypervolume
from lglsearch.search.study import SearchConfig, run_search
from lglsearch.space import Arch
from lglsearch.train.data import load_data
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.scoring import measure
from lglsearch.train.standalone import train_standalone

HERE = Path(__file__).parent / "search_truth"
RESULTS = HERE / "results.json"
HELDOUT = Path(__file__).parents[1].parent / "shared" / "data" / "fashion-mnist"
DEVICE = "snapdragon888"
SAMPLERS = ("nsga2", "random")


RESOLUTION, CLASSES = 64, 10  # the proxy's, as in benchmarks/ranking.py


EMPTY = {"families": {}, "standalone": {}}


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else copy.deepcopy(EMPTY)


def run(
    trials: int,
    seeds: list[int],
    budget_ms: float,
    out: Path,
    heldout_dir: Path,
    space: str | None,
    supernet: str | None,
    path: Path,
    recipe: TrainConfig,
) -> None:
    results = _read(path)
    for seed, sampler in itertools.product(seeds, SAMPLERS):
        key = f"{sampler}/seed{seed}"
        if key in results["families"]:
            continue
        config = SearchConfig(
            DEVICE, budget_ms, space=space, trials=trials, sampler=sampler, seed=seed, supernet=supernet
        )
        directory = out / key.replace("/", "-")
        searched = run_search(config, directory, resume=(directory / "study.journal").exists())
        front = front_frame(searched.study)
        results["families"][key] = {
            "trials": trials,
            "budget_ms": budget_ms,
            "members": front[["arch_id", "accuracy", "accuracy_se", "latency_ms", "macs_g", "arch"]].to_dict("records"),
            "search_seconds": round(searched.seconds, 1),
        }
        record(path, ["families", key], results["families"][key], empty=EMPTY)
        print(f"{key}: {len(front)} members ({searched.seconds:.0f} s)", flush=True)

    train(path, heldout_dir, recipe)


def train(path: Path, heldout_dir: Path, recipe: TrainConfig, shard: tuple[int, int] = (0, 1)) -> None:
    """Train every member of the families found so far stand-alone (an arch in several families once);
    `shard` (k, n): this process's part of them (benchmarks/shards.py)."""
    results = _read(path)
    members = {m["arch_id"]: m["arch"] for f in results["families"].values() for m in f["members"]}
    todo = [i for i in mine(sorted(members), shard) if i not in results["standalone"]]
    if not todo:
        return
    data = load_data(None, RESOLUTION)
    heldout = load_data(heldout_dir, RESOLUTION).val
    for n, arch_id in enumerate(todo, 1):  # keyed by the deploy arch's id, trained at the proxy's size
        if arch_id in _read(path)["standalone"]:  # another shard (a finer split over a slow tail) did it
            continue
        arch = Arch.from_json(members[arch_id]).replace(resolution=RESOLUTION, num_classes=CLASSES)
        started = time.perf_counter()
        model = train_standalone(arch, data, recipe, progress=False)
        held = measure(model, heldout)
        value = {
            "heldout": {"top1": held.top1, "loss": held.loss, "images": len(heldout)},
            "seconds": round(time.perf_counter() - started, 1),
        }
        record(path, ["standalone", arch_id], value, empty=EMPTY)
        print(f"[{n}/{len(todo)}] {arch_id}: stand-alone held-out top-1 {held.top1:.4f}", flush=True)


def family_hypervolume(family: dict, standalone: dict, by: str) -> float:
    """The family's hypervolume in accuracy x latency, by its proxy (search) or stand-alone accuracy."""
    frame = pd.DataFrame(family["members"])
    if by == "standalone":
        frame["accuracy"] = [standalone[i]["heldout"]["top1"] for i in frame["arch_id"]]
    return hypervolume(frame, ("accuracy", "latency"), {"accuracy": 0.0, "latency": family["budget_ms"]})


def report(path: Path) -> None:
    results = _read(path)
    families, standalone = results["families"], results["standalone"]
    seeds = sorted({int(k.split("seed")[1]) for k in families})
    complete = [s for s in seeds if all(f"{x}/seed{s}" in families for x in SAMPLERS)]
    missing = {i for f in families.values() for i in (m["arch_id"] for m in f["members"])} - set(standalone)
    if not complete or missing:
        sys.exit(f"{len(complete)} seed(s) searched by both samplers, {len(missing)} member(s) to train; run first")
    budget = families[f"nsga2/seed{complete[0]}"]["budget_ms"]
    print(f"hypervolume, accuracy x latency against (top-1 0, {budget:g} ms); seeds {complete}")
    for by in ("search", "standalone"):
        hv = {
            x: np.array([family_hypervolume(families[f"{x}/seed{s}"], standalone, by) for s in complete])
            for x in SAMPLERS
        }
        for x in SAMPLERS:
            se = hv[x].std(ddof=1) / np.sqrt(len(hv[x])) if len(hv[x]) > 1 else float("nan")
            values = " ".join(f"{v:.3f}" for v in hv[x])
            print(f"  by {by:10s} accuracy, {x:6s}: {values}  mean {hv[x].mean():.3f} (se {se:.3f})")
        if len(complete) > 1:
            diff = lambda a, b: np.mean(a) - np.mean(b)  # noqa: E731
            exact = permutation_test(
                (hv["nsga2"], hv["random"]),
                diff,
                permutation_type="independent",
                alternative="two-sided",
                n_resamples=np.inf,
            )
            welch = ttest_ind(hv["nsga2"], hv["random"], equal_var=False)
            print(
                f"    NSGA-II - random: {diff(hv['nsga2'], hv['random']):+.3f}; exact permutation p = "
                f"{exact.pvalue:.3f} (two-sided), Welch's t p = {welch.pvalue:.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="search with both samplers, then train every family member stand-alone")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget-ms", type=float, default=30.0)
    p.add_argument("--space", help="a space file or name (default: the default space)")
    p.add_argument("--supernet", help="a supernet directory (default: the search's default one)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-truth"))
    p.add_argument("--heldout", type=Path, default=HELDOUT, help="Fashion-MNIST IDX directory")
    p.add_argument("--smoke-test", action="store_true", help="2 training steps an arch: check the pipeline")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the raw results go (default: committed)")
    p = sub.add_parser("train", help="train the members of the families found so far (resumable; shardable)")
    p.add_argument("--shard", type=shard_arg, default=(0, 1), metavar="K/N", help="every N-th member from the K-th")
    p.add_argument("--heldout", type=Path, default=HELDOUT, help="Fashion-MNIST IDX directory")
    p.add_argument("--smoke-test", action="store_true", help="2 training steps an arch: check the pipeline")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the raw results go (default: committed)")
    p = sub.add_parser("report", help="hypervolumes and the test, from results.json")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.command in ("run", "train"):
        if args.smoke_test and args.results == RESULTS:
            parser.error("--smoke-test results must not enter the committed file: pass --results elsewhere")
        recipe = TrainConfig(seed=0, epochs=1, max_steps_per_epoch=2) if args.smoke_test else TrainConfig(seed=0)
    if args.command == "train":
        train(args.results, args.heldout, recipe, args.shard)
    elif args.command == "run":
        run(
            args.trials,
            args.seeds,
            args.budget_ms,
            args.out,
            args.heldout,
            args.space,
            args.supernet,
            args.results,
            recipe,
        )
    else:
        report(args.results)


if __name__ == "__main__":
    main()
