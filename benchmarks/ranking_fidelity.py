"""Ranking fidelity of the proxy supernet: supernet accuracy against stand-alone accuracy.

Trains the default supernet (or reuses it from the cache), picks the three presets and archs
spread over the default space's MAC range, trains each stand-alone on the same proxy with the
same recipe and budget, trains some again with a second seed, and reports Kendall tau and
Spearman rho between the two accuracies, with the seed-to-seed spread. Every finished arch is
written to OUT/results.json at once, so an interrupted run resumes. Usage:

    python benchmarks/ranking_fidelity.py [--archs 12] [--second-seed 4] [--epochs 3] [--out runs/ranking]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from lglsearch.counting import count
from lglsearch.space import PRESETS
from lglsearch.train.standalone import evaluate, train_standalone
from lglsearch.train.supernet import TrainConfig, accuracy, train_supernet


def spread_archs(space, n: int, seed: int) -> list:
    """`n` archs of distinct MACs at evenly spaced quantiles of a large sample."""
    rng = np.random.default_rng(seed)
    sample = sorted({space.sample(rng) for _ in range(3000)}, key=lambda a: count(a).macs)
    return [sample[int(q * (len(sample) - 1))] for q in np.linspace(0.02, 0.98, n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=12, help="archs in all, presets included")
    parser.add_argument("--second-seed", type=int, default=4, help="archs trained again with seed 1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/ranking"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    config = TrainConfig(epochs=args.epochs)
    started = time.perf_counter()
    trained = train_supernet(config)
    print(f"supernet: {trained.directory} ({time.perf_counter() - started:.0f} s, 0 if cached)", flush=True)
    space, data = trained.net.space, trained.data
    presets = [p.replace(resolution=space.resolution, num_classes=space.num_classes) for p in PRESETS.values()]
    archs = presets + spread_archs(space, args.archs - len(presets), seed=0)
    jobs = [(a, 0) for a in archs] + [
        (a, 1) for a in archs[:: max(1, len(archs) // args.second_seed)][: args.second_seed]
    ]
    for arch, seed in jobs:
        key = f"{arch.id}/seed{seed}"
        if key in results:
            continue
        t0 = time.perf_counter()
        model = train_standalone(arch, data, TrainConfig(**{**config.__dict__, "seed": seed}))
        results[key] = {
            "arch_id": arch.id,
            "seed": seed,
            "label": next((n for n, p in zip(PRESETS, presets, strict=True) if p == arch), "sample"),
            "macs_g": count(arch).macs_g,
            "standalone": evaluate(model, data),
            "supernet": accuracy(trained.net, arch, data),
            "seconds": time.perf_counter() - t0,
            "arch": arch.to_dict(),
        }
        results_path.write_text(json.dumps(results, indent=2))
        r = results[key]
        print(
            f"{key} {r['label']}: stand-alone {r['standalone']:.4f} supernet {r['supernet']:.4f} "
            f"({r['seconds']:.0f} s)",
            flush=True,
        )
    first = [r for r in results.values() if r["seed"] == 0]
    stand, sup = [r["standalone"] for r in first], [r["supernet"] for r in first]
    pairs = [
        (results[f"{r['arch_id']}/seed0"]["standalone"], r["standalone"]) for r in results.values() if r["seed"] == 1
    ]
    spread = [abs(a - b) for a, b in pairs]
    print(
        f"\n{len(first)} archs: Kendall tau {kendalltau(stand, sup).statistic:.3f}, "
        f"Spearman rho {spearmanr(stand, sup).statistic:.3f}; stand-alone accuracy range "
        f"{min(stand):.4f}-{max(stand):.4f}; seed-to-seed |difference| over {len(spread)} archs: "
        f"mean {np.mean(spread):.4f}, max {np.max(spread):.4f}"
    )


if __name__ == "__main__":
    main()
