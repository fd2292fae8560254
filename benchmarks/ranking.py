"""The held-out ranking protocol: how well a score ranks archs by their stand-alone accuracy.

A fixed set of archs of the default space, split once into a development half and a test half
(`benchmarks/ranking/protocol.json`, written by `protocol` before any of their results existed),
each trained stand-alone with the supernet's recipe on the proxy's training images and measured
on images no proxy split holds: Fashion-MNIST's 10,000 test images (the proxy's validation split
is drawn from its training images). Every choice of score, recipe or default is made on the
development half; the test half is reported, not tuned on. Stand-alone results and every score's
values are committed under `benchmarks/ranking/`, so that `report` recomputes every figure from
the repo without training anything. Usage:

    python benchmarks/ranking.py protocol                   # once: the arch set and its split
    python benchmarks/ranking.py train [--seeds 2]          # stand-alone trainings (resumable)
    python benchmarks/ranking.py score [--supernet DIR]    # the search's score and variants of every arch
    python benchmarks/ranking.py report [--half dev|test]   # taus from the committed JSON

`train` needs `--heldout DIR` (Fashion-MNIST's IDX files; default ../shared/data/fashion-mnist).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import bootstrap, kendalltau, spearmanr
from shards import mine, record, shard_arg

from lglsearch._files import atomic_save_torch, atomic_write_json
from lglsearch.counting import count
from lglsearch.space import PRESETS, Arch, load_space
from lglsearch.train.data import balanced_subset, load_data
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.scoring import measure
from lglsearch.train.standalone import train_standalone

HERE = Path(__file__).parent / "ranking"
PROTOCOL = HERE / "protocol.json"
STANDALONE = HERE / "standalone.json"
SCORES = HERE / "scores"
WEIGHTS = HERE / "weights"  # git-ignored (*.pt)
HELDOUT = Path(__file__).parents[1].parent / "shared" / "data" / "fashion-mnist"
# written down on 2026-12-03, before any result of the test archs existed
TEST_DRAW_SEED = 20261203
TEST_ARCHS = 24
RESOLUTION = 64


def spread_archs(space, n: int, seed: int) -> list[Arch]:
    """`n` archs of distinct MACs at evenly spaced quantiles of a large sample."""
    rng = np.random.default_rng(seed)
    sample = sorted({space.sample(rng) for _ in range(3000)}, key=lambda a: count(a).macs)
    return [sample[int(q * (len(sample) - 1))] for q in np.linspace(0.02, 0.98, n)]


def tuned_archs(space) -> list[tuple[str, Arch]]:
    """The 24 archs earlier sessions tuned the proxy on: the presets, 9 spread archs of sampling
    seed 0 and 12 of seed 1. They may only ever be development archs."""
    presets = [(n, p.replace(resolution=space.resolution, num_classes=space.num_classes)) for n, p in PRESETS.items()]
    spread = spread_archs(space, 9, seed=0) + spread_archs(space, 12, seed=1)
    taken = {a for _, a in presets}
    return presets + [("sample", a) for a in dict.fromkeys(spread) if a not in taken]


def write_protocol() -> None:
    if PROTOCOL.exists():
        sys.exit(f"{PROTOCOL} exists: the split is made once; delete it only to start a new protocol")
    space = load_space().with_resolution(RESOLUTION, 10)
    dev = tuned_archs(space)
    seen = {a for _, a in dev}
    test = [a for a in spread_archs(space, TEST_ARCHS + 8, seed=TEST_DRAW_SEED) if a not in seen]
    test = [test[int(i)] for i in np.linspace(0, len(test) - 1, TEST_ARCHS).round()]
    entry = lambda label, a: {"arch_id": a.id, "label": label, "macs_g": count(a).macs_g, "arch": a.to_dict()}  # noqa: E731
    atomic_write_json(
        PROTOCOL,
        {
            "written": "2026-12-03, before any result of the test archs existed",
            "space": "edgevit (default) at 64 px, 10 classes",
            "dev": "the 24 archs earlier sessions tuned on (the presets among them): development only",
            "test": f"{TEST_ARCHS} archs spread over the space's MAC range, drawn with seed {TEST_DRAW_SEED}, "
            "none of the development archs",
            "target": "stand-alone top-1 (mean of the seeds) on Fashion-MNIST's 10,000 test images",
            "recipe": TrainConfig().__dict__ | {"what": "lglsearch.train.standalone.train_standalone"},
            "halves": {
                "dev": [entry(label, a) for label, a in dev],
                "test": [entry("sample", a) for a in test],
            },
        },
    )
    print(f"{PROTOCOL}: {len(dev)} development archs, {len(test)} test archs")


def load_protocol() -> dict[str, list[dict]]:
    return json.loads(PROTOCOL.read_text())["halves"]


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def train(seeds: int, heldout_dir: Path, halves: list[str], shard: tuple[int, int] = (0, 1)) -> None:
    """Every arch's seed 0 first (development half before test), then seed 1: a partial run ranks.
    `shard` (k, n): this process's part of the jobs (benchmarks/shards.py)."""
    halves_archs = load_protocol()
    data = load_data(None, RESOLUTION)
    heldout = load_data(heldout_dir, RESOLUTION).val
    results = _read(STANDALONE)
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    host = {
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    jobs = [(s, h, e) for s in range(seeds) for h in halves for e in halves_archs[h]]
    jobs = [j for j in mine(jobs, shard) if f"{j[2]['arch_id']}/seed{j[0]}" not in results]
    for n, (seed, half, entry) in enumerate(jobs, 1):
        key = f"{entry['arch_id']}/seed{seed}"
        if key in _read(STANDALONE):  # trained meanwhile by a shard of another split (e.g. 3/4 beside 1/2)
            continue
        arch = Arch.from_dict(entry["arch"])
        started = time.perf_counter()
        model = train_standalone(arch, data, TrainConfig(seed=seed), progress=False)
        seconds = time.perf_counter() - started
        atomic_save_torch(model.state_dict(), WEIGHTS / f"{arch.id}-seed{seed}.pt")
        val, held = measure(model, data.val), measure(model, heldout)
        record(
            STANDALONE,
            [key],
            {
                "arch_id": arch.id,
                "seed": seed,
                "half": half,
                "seconds": round(seconds, 1),
                "proxy_val": {"top1": val.top1, "loss": val.loss, "images": len(data.val)},
                "heldout": {"top1": held.top1, "loss": held.loss, "images": len(heldout)},
                "host": host,
            },
        )
        print(
            f"[{n}/{len(jobs)}] {key} ({half}): held-out top-1 {held.top1:.4f}, loss {held.loss:.4f} ({seconds:.0f} s)",
            flush=True,
        )


def score(
    supernet: str | None,
    calib_seeds: int,
    workers: int,
    finetunes: list[tuple[int, int]],
    finetune_halves: list[str],
    shard: tuple[int, int] = (0, 1),
) -> None:
    """The search's default score of every arch (`lglsearch score`'s code path), and the variants
    the development half chooses between: the score on 2,000 of the 5,000 validation images (the
    earlier split's size), the same scores with other BatchNorm calibration batches (the score's
    own noise), and, for the archs of `halves`, the score after fine-tuning each arch's inherited
    weights (`finetunes`: (steps, repeats), `lglsearch score --finetune-steps/--finetune-repeats`,
    the code path of `search --refine`). Written to scores/<supernet key>.json, resumable."""
    from lglsearch.search.accuracy import ScoreOptions, prepare_supernet, score_archs
    from lglsearch.train.scoring import calibration_images, materialise, proxy_scores
    from lglsearch.train.supernet import load_supernet

    halves = load_protocol()
    archs = [Arch.from_dict(e["arch"]) for h in ("dev", "test") for e in halves[h]]
    space = load_space()
    spec, _, provenance = prepare_supernet(space, ScoreOptions(supernet=supernet), progress=True)
    directory = Path(provenance["supernet"])
    path = SCORES / f"{directory.name}.json"
    stored = _read(path) or {"supernet": provenance, "scores": {}}
    todo = [a for a in archs if a.id not in stored["scores"]]
    if todo:  # the default: exactly what a search records
        rows, _ = score_archs(todo, space, ScoreOptions(supernet=str(directory)), workers=workers)
        for arch, row in zip(todo, rows, strict=True):  # keyed by the protocol's (64 px) id
            stored["scores"][arch.id] = {"default": row}
        atomic_write_json(path, stored)
    net = load_supernet(directory)
    data = load_data(spec.data, net.space.resolution)
    val = materialise(data.val)
    sets = {"val": val, "val2000": balanced_subset(val, 2000)}
    for seed in range(calib_seeds):
        calib = calibration_images(data, seed=seed)
        name = f"calib{seed}"
        for n, arch in enumerate(archs, 1):
            if name in stored["scores"][arch.id]:
                continue
            started = time.perf_counter()
            scored = proxy_scores(net, arch, data, sets, calib=calib)
            stored["scores"][arch.id][name] = {k: v.__dict__ for k, v in scored.items()} | {
                "seconds": round(time.perf_counter() - started, 3)
            }
            atomic_write_json(path, stored)
            print(f"{name}: {arch.id} ({n}/{len(archs)})", flush=True)
    for steps, repeats in finetunes:
        name = f"finetune{steps}x{repeats}"
        todo = [Arch.from_dict(e["arch"]) for h in finetune_halves for e in halves[h]]
        todo = [a for a in mine(todo, shard) if name not in stored["scores"][a.id]]
        for n, arch in enumerate(todo, 1):  # one at a time, so that an interruption loses one arch
            options = ScoreOptions(supernet=str(directory), finetune_steps=steps, finetune_repeats=repeats)
            rows, _ = score_archs([arch], space, options, progress=False)
            record(path, ["scores", arch.id, name], rows[0])
            print(f"{name}: {arch.id} ({n}/{len(todo)}, {rows[0]['seconds']:.0f} s)", flush=True)
    print(f"scores: {path}")


def correlations(x, y) -> tuple[float, float, float, float]:
    """Kendall tau and Spearman rho, each with its bootstrap standard error over the archs."""
    spread = bootstrap(
        (x, y),
        lambda a, b: np.array([kendalltau(a, b).statistic, spearmanr(a, b).statistic]),
        paired=True,
        vectorized=False,
        n_resamples=1000,
        method="percentile",
        random_state=0,
    )
    tau_se, rho_se = spread.standard_error
    return float(kendalltau(x, y).statistic), float(tau_se), float(spearmanr(x, y).statistic), float(rho_se)


def tau_gain(x, baseline, y) -> tuple[float, float]:
    """How much better `x` ranks `y` than `baseline` does (difference of Kendall taus), and the
    bootstrap standard error of that difference with the archs resampled together (paired: far
    tighter than the two taus' own errors, as both scores meet the same hard pairs)."""
    gain = kendalltau(x, y).statistic - kendalltau(baseline, y).statistic
    spread = bootstrap(
        (x, baseline, y),
        lambda a, b, c: kendalltau(a, c).statistic - kendalltau(b, c).statistic,
        paired=True,
        vectorized=False,
        n_resamples=1000,
        method="percentile",
        random_state=0,
    )
    return float(gain), float(spread.standard_error)


def noiseless_tau(seed_tau: float, k: int) -> float:
    """The Kendall tau a ranker free of noise would show against the mean of `k` seeds whose pairs
    agree at `seed_tau`, if an arch's measurements are its true accuracy plus independent normal
    noise: Greiner's relation (r = sin(pi tau / 2) for normal pairs) gives the seeds' reliability,
    Spearman-Brown that of their mean, and the ranker correlates with the mean at its square root."""
    r = max(np.sin(np.pi * seed_tau / 2), 0.0)
    reliability = k * r / (1 + (k - 1) * r)
    return float(2 / np.pi * np.arcsin(np.sqrt(reliability)))


def report(half: str, seeds: int) -> None:
    entries = load_protocol()[half]
    results = _read(STANDALONE)
    done = [e for e in entries if all(f"{e['arch_id']}/seed{s}" in results for s in range(seeds))]
    if len(done) < 4:
        sys.exit(f"{len(done)} {half} archs have {seeds} stand-alone seed(s); train them first")
    ids = [e["arch_id"] for e in done]
    by_seed = [[results[f"{i}/seed{s}"]["heldout"]["top1"] for i in ids] for s in range(seeds)]
    target = list(np.mean(by_seed, axis=0))
    print(f"{half} half: {len(ids)} of {len(entries)} archs with {seeds} seed(s); target: held-out top-1 mean")
    print(f"  stand-alone held-out top-1 {min(target):.4f}-{max(target):.4f}")
    if seeds > 1:
        tau, se, rho, rho_se = correlations(by_seed[0], by_seed[1])
        print(
            f"  seed 0 vs seed 1: tau {tau:.3f} (se {se:.2f}), rho {rho:.3f} (se {rho_se:.2f}); "
            f"a noiseless ranker would show about tau {noiseless_tau(tau, seeds):.2f} against their mean"
        )
    macs = {e["arch_id"]: e["macs_g"] for e in done}
    params = {e["arch_id"]: count(Arch.from_dict(e["arch"])).params_m for e in done}
    rows = {"MACs alone": [macs[i] for i in ids], "parameters alone": [params[i] for i in ids]}
    for path in sorted(SCORES.glob("*.json")):
        scored = json.loads(path.read_text())["scores"]
        if not all(i in scored for i in ids):
            continue
        # `default`: what `lglsearch score` recorded when `score` ran (the whole 5,000-image split then);
        # `calib0 val2000` below is the search's default since (SCORE_IMAGES), on the same batches
        rows[f"{path.stem} default (search) top-1"] = [scored[i]["default"]["accuracy"] for i in ids]
        rows[f"{path.stem} default (search) -loss"] = [-scored[i]["default"]["loss"] for i in ids]
        for name in sorted({k for i in ids for k in scored[i] if k.startswith("finetune")}):
            if all(name in scored[i] for i in ids):
                rows[f"{path.stem} {name} top-1"] = [scored[i][name]["accuracy"] for i in ids]
                rows[f"{path.stem} {name} -loss"] = [-scored[i][name]["loss"] for i in ids]
                # the median: an arch scored while the machine was shared or paused records its wall time
                seconds = np.median([scored[i][name]["seconds"] for i in ids])
                print(f"  {path.stem} {name}: {seconds:.1f} s an arch (median)")
        calibs = sorted({k for i in ids for k in scored[i] if k.startswith("calib")})
        for calib in calibs:
            if not all(calib in scored[i] for i in ids):
                continue
            for subset in ("val", "val2000"):
                rows[f"{path.stem} {calib} {subset} top-1"] = [scored[i][calib][subset]["top1"] for i in ids]
                rows[f"{path.stem} {calib} {subset} -loss"] = [-scored[i][calib][subset]["loss"] for i in ids]
        if len(calibs) > 1 and all(all(c in scored[i] for c in calibs) for i in ids):
            for what in ("top1", "loss"):
                per_calib = np.array([[scored[i][c]["val"][what] for c in calibs] for i in ids])
                mean = per_calib.mean(axis=1)
                rows[f"{path.stem} mean of {len(calibs)} calibrations {what}"] = list(mean if what == "top1" else -mean)
                noise = per_calib.std(axis=1, ddof=1).mean()
                sampling = np.mean([scored[i]["calib0"]["val"][f"{what}_se"] for i in ids])
                print(
                    f"  {path.stem} {what}: spread over {len(calibs)} calibration seeds (sd, mean over archs) "
                    f"{noise:.4f}, sampling standard error of the validation split {sampling:.4f}"
                )
    print("  (the search's default score: 'calib0 val2000 top-1', 2,000 images; 'default (search)' scored all 5,000)")
    baseline = next((v for k, v in rows.items() if k.endswith("default (search) top-1")), None)
    for name, values in rows.items():
        tau, se, rho, rho_se = correlations(values, target)
        line = f"  {name:40s} tau {tau:6.3f} (se {se:.2f}), rho {rho:6.3f} (se {rho_se:.2f})"
        if baseline is not None and values is not baseline:
            gain, gain_se = tau_gain(values, baseline, target)
            line += f"; vs the default top-1 {gain:+.3f} (paired se {gain_se:.2f})"
        print(line)
    # the rows above compare with the default the benchmark began with (all 5,000 images); the search
    # scores 2,000 since, so each score is also set against that
    current = next((v for k, v in rows.items() if k.endswith("calib0 val2000 top-1")), None)
    if current is not None:
        print("  against the search's default now (calib0 val2000 top-1):")
        for name, values in rows.items():
            if values is not current:
                gain, gain_se = tau_gain(values, current, target)
                print(f"    {name:40s} {gain:+.3f} (paired se {gain_se:.2f})")


def _steps_repeats(text: str, parser: argparse.ArgumentParser) -> tuple[int, int]:
    steps, _, repeats = text.partition("x")
    if not (steps.isdigit() and repeats.isdigit() and int(steps) > 0 and int(repeats) > 0):
        parser.error(f"--finetune takes STEPSxREPEATS with both positive, e.g. 60x2; got {text!r}")
    return int(steps), int(repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("protocol", help="write the arch set and its split (once)")
    p = sub.add_parser("train", help="train every arch stand-alone (resumable)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--halves", nargs="+", default=["dev", "test"], choices=["dev", "test"])
    p.add_argument("--heldout", type=Path, default=HELDOUT, help="Fashion-MNIST IDX directory")
    p.add_argument("--shard", type=shard_arg, default=(0, 1), metavar="K/N", help="every N-th job from the K-th")
    p = sub.add_parser("score", help="the search's score and its variants for every arch (resumable)")
    p.add_argument("--supernet", help="a supernet directory (default: the search's default one)")
    p.add_argument("--calib-seeds", type=int, default=3, help="BatchNorm calibration seeds of the variants")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--finetune",
        action="append",
        default=[],
        metavar="STEPSxREPEATS",
        help="also score after fine-tuning each arch (e.g. 60x2, --refine's recipe); repeatable",
    )
    p.add_argument("--finetune-halves", nargs="+", default=["dev"], choices=["dev", "test"])
    p.add_argument(
        "--shard", type=shard_arg, default=(0, 1), metavar="K/N", help="every N-th fine-tuning from the K-th"
    )
    p = sub.add_parser("report", help="rank correlations from the committed results")
    p.add_argument("--half", default="dev", choices=["dev", "test"])
    p.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    if args.command == "protocol":
        write_protocol()
    elif args.command == "train":
        train(args.seeds, args.heldout, args.halves, args.shard)
    elif args.command == "score":
        finetunes = [_steps_repeats(f, parser) for f in args.finetune]
        score(args.supernet, args.calib_seeds, args.workers, finetunes, args.finetune_halves, args.shard)
    else:
        report(args.half, args.seeds)


if __name__ == "__main__":
    main()
