"""Ranking fidelity of the proxy supernet: supernet scores against stand-alone accuracy.

Picks the three presets and archs spread over the default space's MAC range (9 from one sample,
`--extra` more from a second), trains each stand-alone on the same proxy with the same recipe
and budget, with two seeds, and reports Kendall tau and Spearman rho between the stand-alone
accuracy (and cross-entropy) and the supernet's top-1 and validation cross-entropy, each scored
on the inherited weights and after `--finetune-steps` steps of fine-tuning them, beside the
seed-to-seed tau of stand-alone training itself (which bounds what any proxy can show).
`--heldout DATA` measures every stand-alone model and supernet score on DATA's validation split
too (Fashion-MNIST's 10,000 test images against the proxy's 2,000: a steadier target). Every
finished training (its weights under OUT/weights) and every supernet score is written under OUT at
once, so an interrupted run resumes, and a new held-out set measures stored models without
retraining them. The default OUT, `benchmarks/ranking/`, is committed but for the weights (`*.pt`
are ignored): the stand-alone results are hours of training on 2 cores, and a later session scores
a new supernet against them at once. Usage:

    python benchmarks/ranking_fidelity.py [--extra 12] [--seeds 2] [--epochs 3] [--supernet DIR ...]
                                          [--finetune-steps 0 60] [--finetune-repeats 1] [--complete-loss]
                                          [--heldout DATA] [--disagreement] [--out benchmarks/ranking]

Without --supernet it trains (or reuses from the cache) the default supernet of `--epochs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import bootstrap, kendalltau, spearmanr

from lglsearch.counting import count
from lglsearch.nn import build_model
from lglsearch.space import PRESETS, Arch
from lglsearch.train.data import load_data
from lglsearch.train.standalone import train_standalone
from lglsearch.train.supernet import (
    TrainConfig,
    calibration_images,
    load_supernet,
    materialise,
    measure,
    proxy_scores,
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
    """Kendall tau with its standard error over the archs (a bootstrap: with 24 archs it is about
    0.1, which any comparison of two taus must allow for) and Spearman rho."""
    tau = kendalltau(x, y).statistic
    spread = bootstrap(
        (x, y),
        lambda a, b: kendalltau(a, b).statistic,
        paired=True,
        vectorized=False,
        n_resamples=1000,
        method="percentile",
        random_state=0,
    )
    return f"tau {tau:.3f} (se {spread.standard_error:.2f}), rho {spearmanr(x, y).statistic:.3f}"


def noiseless_tau(seed_tau: float, k: int) -> float:
    """The Kendall tau a ranker free of noise would show against the mean of `k` seeds whose pairs
    agree at `seed_tau`, if an arch's measurements are its true accuracy plus independent normal
    noise: Greiner's relation (r = sin(pi tau / 2) for normal pairs) gives the seeds' reliability,
    Spearman-Brown that of their mean, and the ranker correlates with the mean at its square root."""
    r = np.sin(np.pi * seed_tau / 2)
    reliability = k * r / (1 + (k - 1) * r)
    return float(2 / np.pi * np.arcsin(np.sqrt(reliability)))


@torch.no_grad()
def disagreement(archs: list[Arch], weights: Path, dataset, seeds: tuple[int, int]) -> float:
    """The mean fraction of `dataset`'s images on which an arch's two seeds predict different classes.

    On N images, two models that disagree on a fraction d of them differ in top-1 by a sampling
    error of about sqrt(d / N) (each disagreement moves the difference by 1/N, either way): the
    part of the seed-to-seed spread that a larger evaluation set would shrink.
    """
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    fractions = []
    for arch in archs:
        predictions = []
        for seed in seeds:
            model = build_model(arch)
            model.load_state_dict(torch.load(weights / f"{arch.id}-seed{seed}.pt", weights_only=True))
            predictions.append(torch.cat([model.eval()(batch).argmax(-1) for batch in images.split(256)]))
        fractions.append((predictions[0] != predictions[1]).float().mean().item())
    return float(np.mean(fractions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=12, help="archs beyond the presets and the first 9")
    parser.add_argument("--seeds", type=int, default=2, help="stand-alone trainings of every arch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--supernet", type=Path, nargs="*", default=[], help="trained supernet directories to score")
    parser.add_argument(
        "--finetune-steps", type=int, nargs="+", default=[0, 60], help="score each arch after these fine-tuning steps"
    )
    parser.add_argument("--finetune-repeats", type=int, default=1, help="average this many fine-tunings (batch seeds)")
    parser.add_argument(
        "--heldout",
        help="data whose validation split (e.g. Fashion-MNIST's 10,000 test images: a directory of its IDX "
        "files) also measures every stand-alone model and supernet score: a steadier target",
    )
    parser.add_argument(
        "--disagreement", action="store_true", help="how often an arch's two seeds predict differently (stored weights)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "ranking")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report the archs done so far")
    parser.add_argument(
        "--complete-loss",
        action="store_true",
        help="retrain stand-alone results recorded before the cross-entropy was (checks top-1 reproduces)",
    )
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
    heldout = None
    if args.heldout:  # a larger held-out set: steadier stand-alone and supernet measurements
        heldout_data = load_data(args.heldout, space.resolution)
        heldout = {"source": heldout_data.source, "images": len(heldout_data.val)}
    weights = args.out / "weights"
    weights.mkdir(exist_ok=True)
    for seed in range(args.seeds):  # every arch's seed 0 first: a partial run already ranks
        for label, arch in archs:
            key = f"{arch.id}/seed{seed}"
            known = results.get(key, {})
            done = key in results and ("standalone_loss" in known or not args.complete_loss)
            done = done and (heldout is None or known.get("heldout", {}).get("source") == heldout["source"])
            if done or args.report_only:
                continue
            before = known.get("standalone")
            stored = weights / f"{arch.id}-seed{seed}.pt"
            t0 = time.perf_counter()
            if stored.is_file():  # trained before: measure again without retraining
                model = build_model(arch)
                model.load_state_dict(torch.load(stored, weights_only=True))
            else:
                model = train_standalone(arch, data, TrainConfig(**{**config.__dict__, "seed": seed}), progress=False)
                torch.save(model.state_dict(), stored)
                known = {**known, "seconds": time.perf_counter() - t0}
            score = measure(model, data.val)
            results[key] = known | {
                "arch_id": arch.id,
                "seed": seed,
                "label": label,
                "macs_g": count(arch).macs_g,
                "standalone": score.top1,
                "standalone_loss": score.loss,
                "arch": arch.to_dict(),
            }
            line = f"{key} {label}: stand-alone {score.top1:.4f}"
            if before is not None:
                line += f", recorded before: {before:.4f}"
            if heldout is not None:
                held = measure(model, heldout_data.val)
                results[key]["heldout"] = heldout | {"top1": held.top1, "loss": held.loss}
                line += f"; held-out {held.top1:.4f}"
            results_path.write_text(json.dumps(results, indent=2))
            print(f"{line} ({time.perf_counter() - t0:.0f} s)", flush=True)

    archs = [(label, a) for label, a in archs if all(f"{a.id}/seed{s}" in results for s in range(args.seeds))]
    ids = [a.id for _, a in archs]
    runs = [[results[f"{i}/seed{s}"] for i in ids] for s in range(args.seeds)]
    by_seed = [[r["standalone"] for r in run] for run in runs]
    mean = list(np.mean(by_seed, axis=0))
    print(f"\n{len(ids)} archs, stand-alone top-1 {min(mean):.4f}-{max(mean):.4f} (mean of {args.seeds} seeds)")
    targets = {"top-1 seed 0": by_seed[0], f"top-1 mean of {args.seeds}": mean}
    with_loss = [i for i, _ in enumerate(ids) if all("standalone_loss" in run[i] for run in runs)]
    loss_ids = [ids[i] for i in with_loss]
    if with_loss:  # older results lack the loss
        neg_loss_mean = [-np.mean([run[i]["standalone_loss"] for run in runs]) for i in with_loss]
        targets[f"-loss mean of {args.seeds} ({len(with_loss)} archs)"] = neg_loss_mean
    # the seeds whose models were all measured on the held-out images (a partial run reports them)
    source = heldout["source"] if heldout else "none asked"
    held_seeds = [
        s for s, run in enumerate(runs) if source and all(r.get("heldout", {}).get("source") == source for r in run)
    ]
    if held_seeds:
        held_by_seed = {s: [r["heldout"]["top1"] for r in runs[s]] for s in held_seeds}
        held_loss = {s: [r["heldout"]["loss"] for r in runs[s]] for s in held_seeds}
        n, k = heldout["images"], len(held_seeds)
        targets[f"held-out top-1 mean of {k}"] = list(np.mean(list(held_by_seed.values()), axis=0))
        targets[f"held-out -loss mean of {k}"] = list(-np.mean(list(held_loss.values()), axis=0))
    for a, b in itertools.combinations(range(args.seeds), 2):
        diffs = np.abs(np.subtract(by_seed[a], by_seed[b]))
        line = f"seed {a} vs seed {b}: top-1 {correlations(by_seed[a], by_seed[b])}"
        line += f"; |difference| mean {diffs.mean():.4f}, max {diffs.max():.4f}"
        if len(with_loss) > 2:
            losses = [[runs[s][i]["standalone_loss"] for i in with_loss] for s in (a, b)]
            line += f"; loss ({len(with_loss)} archs) {correlations(*losses)}"
        print(line)
        tau = kendalltau(by_seed[a], by_seed[b]).statistic
        print(
            f"  a noiseless ranker would show about tau {noiseless_tau(tau, 1):.2f} against one seed, "
            f"{noiseless_tau(tau, args.seeds):.2f} against the mean of {args.seeds} (normal noise)"
        )
        if a in held_seeds and b in held_seeds:
            diffs = np.abs(np.subtract(held_by_seed[a], held_by_seed[b]))
            print(
                f"  on the {n} held-out images: top-1 {correlations(held_by_seed[a], held_by_seed[b])}; "
                f"|difference| mean {diffs.mean():.4f}, max {diffs.max():.4f}; "
                f"loss {correlations(held_loss[a], held_loss[b])}"
            )
            tau = kendalltau(held_by_seed[a], held_by_seed[b]).statistic
            print(f"  a noiseless ranker: about tau {noiseless_tau(tau, k):.2f} against their held-out mean of {k}")
        if args.disagreement:
            archs_stored = [x for _, x in archs if all((weights / f"{x.id}-seed{s}.pt").is_file() for s in (a, b))]
            d = disagreement(archs_stored, weights, heldout_data.val if heldout else data.val, (a, b))
            images = heldout["images"] if heldout else len(data.val)
            print(
                f"  the two seeds of an arch disagree on {d:.2%} of {images} images ({len(archs_stored)} archs): "
                f"a sampling error of {np.sqrt(d / images):.4f} on their top-1 difference, "
                f"{np.sqrt(d / len(data.val)):.4f} on {len(data.val)} images"
            )
    data = dataclasses.replace(data, val=materialise(data.val))  # transformed once for all scorings
    sets = {"val": data.val}
    if held_seeds:
        sets["heldout"] = materialise(heldout_data.val)
    calib = calibration_images(data)  # the same batches for every supernet
    for directory in supernets:
        net = load_supernet(directory, space)
        for steps in args.finetune_steps:
            # one cache per fine-tuning seed: --finetune-repeats R averages seeds 0..R-1, as
            # proxy_score(finetune_repeats=R) does
            tunings = []
            for repeat in range(args.finetune_repeats if steps else 1):
                name = f"finetune{steps}" + (f"-seed{repeat}" if steps else "")
                cache = args.out / f"supernet-{Path(directory).name}" / f"{name}.json"
                cache.parent.mkdir(exist_ok=True)
                scored = json.loads(cache.read_text()) if cache.is_file() else {}
                for n, (_, arch) in enumerate(archs, 1):
                    if arch.id in scored and ("heldout" not in sets or "heldout" in scored[arch.id]):
                        continue
                    t0 = time.perf_counter()
                    score = proxy_scores(net, arch, data, sets, calib=calib, finetune_steps=steps, seed=repeat)
                    scored[arch.id] = score["val"].__dict__ | {"seconds": time.perf_counter() - t0}
                    if "heldout" in score:
                        scored[arch.id]["heldout"] = score["heldout"].__dict__
                    cache.write_text(json.dumps(scored, indent=2))
                    print(f"  {cache.parent.name}/{name}: {arch.id} scored ({n}/{len(archs)})", flush=True)
                tunings.append(scored)
            top1 = {i: np.mean([run[i]["top1"] for run in tunings]) for i in ids}
            neg = {i: -np.mean([run[i]["loss"] for run in tunings]) for i in ids}
            seconds = np.mean([run[i]["seconds"] for run in tunings for i in ids]) * len(tunings)
            repeats = f" x{len(tunings)}" if steps else ""
            print(
                f"supernet {Path(directory).name}, {steps} fine-tuning steps{repeats}: "
                f"top-1 {min(top1.values()):.4f}-{max(top1.values()):.4f}, {seconds:.1f} s an arch"
            )
            if "heldout" in sets:
                held_top1 = {i: np.mean([run[i]["heldout"]["top1"] for run in tunings]) for i in ids}
                held_neg = {i: -np.mean([run[i]["heldout"]["loss"] for run in tunings]) for i in ids}
            for name, target in targets.items():
                subset = loss_ids if name.startswith("-loss") else ids
                if name.startswith("held-out"):  # scored on the same held-out images
                    scores = [held_top1[i] for i in subset], [held_neg[i] for i in subset]
                else:
                    scores = [top1[i] for i in subset], [neg[i] for i in subset]
                print(
                    f"  vs {name}: top-1 {correlations(target, scores[0])}; -loss {correlations(target, scores[1])}",
                    flush=True,
                )
                if name.startswith("held-out"):  # the same target, scored as the product scores (its own split)
                    scores = [top1[i] for i in subset], [neg[i] for i in subset]
                    print(
                        f"    scored on the {len(data.val)} validation images: "
                        f"top-1 {correlations(target, scores[0])}; -loss {correlations(target, scores[1])}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
