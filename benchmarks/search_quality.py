"""Search quality on the default space and snapdragon888: NSGA-II against random search, and the presets.

1. Hypervolume (Optuna's, accuracy against latency, reference point (0, budget)) of NSGA-II and of
   random search at equal trial counts, over several seeds, under the README's 30 ms budget.
2. Whether the search beats the hand design: for each preset, a search with the budget set to
   that preset's own snapdragon888 latency; the front's best arch with higher proxy accuracy at
   no more latency and energy, or that none was found.

Every search reuses the default supernet (trained once, cached) and keeps its run directory
under OUT, and finished results are written to OUT/results.json at once, so an interrupted
benchmark resumes. Usage:

    python benchmarks/search_quality.py [--trials 60] [--seeds 0 1 2] [--out runs/bench-search]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lglsearch._files import atomic_write_json
from lglsearch.cost.table import CostTable
from lglsearch.search.pareto import dominating, front_frame, hypervolume
from lglsearch.search.study import SearchConfig, run_search
from lglsearch.space import PRESETS

DEVICE = "snapdragon888"


def search(config: SearchConfig, out: Path):
    resume = (out / "study.journal").exists()
    return run_search(config, out, resume=resume)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget-ms", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-search"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def save(key: str, value: dict) -> None:
        results[key] = value
        atomic_write_json(results_path, results)
        print(key, json.dumps(value), flush=True)

    reference = {"accuracy": 0.0, "latency": args.budget_ms}
    for seed in args.seeds:
        for sampler in ("nsga2", "random"):
            key = f"hv/{sampler}/seed{seed}"
            if key in results:
                continue
            config = SearchConfig(DEVICE, args.budget_ms, trials=args.trials, sampler=sampler, seed=seed)
            run = search(config, args.out / key.replace("/", "-"))
            front = front_frame(run.study)
            save(
                key,
                {
                    "hypervolume": hypervolume(front, ("accuracy", "latency"), reference),
                    "best_accuracy": float(front["accuracy"].max()),
                    "front": len(front),
                    "rejected": sum(t.state.name == "PRUNED" for t in run.study.trials),
                    "seconds": run.seconds,
                },
            )

    table = CostTable.load(DEVICE)
    for name, preset in PRESETS.items():
        key = f"preset/{name}"
        if key in results:
            continue
        latency, energy = table.cost(preset)
        config = SearchConfig(DEVICE, latency, trials=args.trials, seed=0)
        run = search(config, args.out / key.replace("/", "-"))
        front = front_frame(run.study)
        row = run.presets.set_index("name").loc[name]
        best = dominating(front, row, run.objectives)
        save(
            key,
            {
                "latency_ms": latency,
                "energy_mj": energy,
                "accuracy": float(row["accuracy"]),
                "dominated_by": None
                if best is None
                else {k: best[k] for k in ("arch_id", "accuracy", "latency_ms", "energy_mj", "macs_g", "arch")},
                "seconds": run.seconds,
            },
        )

    print(f"\nhypervolume at {args.trials} trials, budget {args.budget_ms:g} ms (accuracy x ms):")
    for sampler in ("nsga2", "random"):
        hv = [results[f"hv/{sampler}/seed{s}"]["hypervolume"] for s in args.seeds]
        best = [results[f"hv/{sampler}/seed{s}"]["best_accuracy"] for s in args.seeds]
        print(
            f"  {sampler:6s} {' '.join(f'{v:.4f}' for v in hv)}  mean {np.mean(hv):.4f} +- {np.std(hv):.4f}; "
            f"best top-1 {' '.join(f'{100 * b:.2f}' for b in best)}"
        )
    for name in PRESETS:
        r = results[f"preset/{name}"]
        beat = r["dominated_by"]
        print(
            f"  {name}: {100 * r['accuracy']:.2f}% at {r['latency_ms']:.2f} ms -> "
            + (
                "none found"
                if beat is None
                else f"{beat['arch_id']} {100 * beat['accuracy']:.2f}% at {beat['latency_ms']:.2f} ms, "
                f"{beat['macs_g']:.3f} GMACs"
            )
        )


if __name__ == "__main__":
    main()
