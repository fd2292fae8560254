"""Ranking fidelity of the proxy supernet: supernet scores against stand-alone accuracy.

Picks the three presets and archs spread over the default space's MAC range (9 from one sample,
`--extra` more from a second), trains each stand-alone on the same proxy with the same recipe
and budget, with two seeds, and reports Kendall tau and Spearman rho between the stand-alone
accuracy and the supernet's top-1 and validation cross-entropy, beside the seed-to-seed tau of
stand-alone training itself (which bounds what any proxy can show). Every finished training is
written to OUT/results.json at once, so an interrupted run resumes. Usage:

    python benchmarks/ranking_fidelity.py [--extra 12] [--seeds 2] [--epochs 3] [--supernet DIR ...]
                                          [--out runs/ranking]

Without --supernet it trains (or reuses from the cache) the default supernet of `--epochs`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from lglsearch.counting import count
from lglsearch.space import PRESETS, Arch
from lglsearch.train.data import load_data
from lglsearch.train.standalone import train_standalone
from lglsearch.train.supernet import (
    TrainConfig,
    calibration_images,
    load_supernet,
    measure,
    proxy_score,
    train_supernet,
)


def spread_archs(space, n: int, seed: int) -> list:
    """`n` archs of distinct MACs at evenly spaced quantiles of a large sample."""
    rng = np.random.default_rng(seed)
    sample = sorted({space.sample(rng) for _ in range(3000)}, key=lambda a: count(a).macs)
    return [sample[int(q * (len(sample) - 1))] for q in np.linspace(0.02, 0.98, n)]


def ranking_archs(space, extra: int) -> list[tuple[str, Arch]]:
    """The presets, 9 archs spread with sampling seed 0 and `extra` spread with seed 1."""
    presets = [(n, p.replace(resolution=space.resolution, num_classes=space.num_classes)) for n, p in PRESETS.items()]
    spread = spread_archs(space, 9, seed=0) + (spread_archs(space, extra, seed=1) if extra else [])
    taken = {a for _, a in presets}
    return presets + [("sample", a) for a in dict.fromkeys(spread) if a not in taken]  # each arch once


def correlations(x: list[float], y: list[float]) -> str:
    return f"tau {kendalltau(x, y).statistic:.3f}, rho {spearmanr(x, y).statistic:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=12, help="archs beyond the presets and the first 9")
    parser.add_argument("--seeds", type=int, default=2, help="stand-alone trainings of every arch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--supernet", type=Path, nargs="*", default=[], help="trained supernet directories to score")
    parser.add_argument("--out", type=Path, default=Path("runs/ranking"))
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the archs done so far")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    config = TrainConfig(epochs=args.epochs)
    supernets = args.supernet
    if not supernets:
        started = time.perf_counter()
        supernets = [train_supernet(config).directory]
        print(f"supernet: {supernets[0]} ({time.perf_counter() - started:.0f} s, 0 if cached)", flush=True)
    space = load_supernet(supernets[0]).space
    data = load_data(config.data, space.resolution)
    archs = ranking_archs(space, args.extra)
    for label, arch in archs:
        for seed in range(args.seeds):
            key = f"{arch.id}/seed{seed}"
            if key in results or args.report_only:
                continue
            t0 = time.perf_counter()
            model = train_standalone(arch, data, TrainConfig(**{**config.__dict__, "seed": seed}), progress=False)
            score = measure(model, data.val)
            results[key] = {
                "arch_id": arch.id,
                "seed": seed,
                "label": label,
                "macs_g": count(arch).macs_g,
                "standalone": score.top1,
                "standalone_loss": score.loss,
                "seconds": time.perf_counter() - t0,
                "arch": arch.to_dict(),
            }
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{key} {label}: stand-alone {score.top1:.4f} ({results[key]['seconds']:.0f} s)", flush=True)

    archs = [(label, a) for label, a in archs if all(f"{a.id}/seed{s}" in results for s in range(args.seeds))]
    ids = [a.id for _, a in archs]
    by_seed = [[results[f"{i}/seed{s}"]["standalone"] for i in ids] for s in range(args.seeds)]
    mean = list(np.mean(by_seed, axis=0))
    print(f"\n{len(ids)} archs, stand-alone top-1 {min(mean):.4f}-{max(mean):.4f} (mean of {args.seeds} seeds)")
    if args.seeds > 1:
        diffs = np.abs(np.subtract(by_seed[0], by_seed[1]))
        print(
            f"seed 0 vs seed 1: {correlations(by_seed[0], by_seed[1])}; "
            f"|difference| mean {diffs.mean():.4f}, max {diffs.max():.4f}"
        )
    calib = calibration_images(data)  # the same batches for every supernet
    for directory in supernets:
        net = load_supernet(directory, space)
        scores = [proxy_score(net, a, data, calib=calib) for _, a in archs]
        (args.out / f"supernet-{Path(directory).name}.json").write_text(
            json.dumps({i: s.__dict__ for i, s in zip(ids, scores, strict=True)}, indent=2)
        )
        top1, neg_loss = [s.top1 for s in scores], [-s.loss for s in scores]
        print(
            f"supernet {Path(directory).name}: top-1 {min(top1):.4f}-{max(top1):.4f}\n"
            f"  top-1 vs seed 0: {correlations(by_seed[0], top1)};  vs mean: {correlations(mean, top1)}\n"
            f"  -loss vs seed 0: {correlations(by_seed[0], neg_loss)};  vs mean: {correlations(mean, neg_loss)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
