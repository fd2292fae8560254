"""How the committed example family (runs/snapdragon888-30ms) changes when its trials are priced by
another table: every scored trial re-priced, the front of (proxy top-1, latency) within the budget
recomputed, members kept, dropped and new. The accuracies are the run's own (the proxy); only the
latency axis changes. Usage:

    python benchmarks/family_change.py --before /tmp/before/latency_tables --run /tmp/before/runs/snapdragon888-30ms

(`--run` defaults to the committed example; the figures in RESULTS are of the example at d82c099.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lglsearch.cost.table import CostTable
from lglsearch.search.pareto import nondominated_ranks
from lglsearch.space import Arch

HERE = Path(__file__).resolve().parent


def front(trials: pd.DataFrame, latency: str, budget: float) -> pd.DataFrame:
    inside = trials[trials[latency] <= budget]
    ranks = nondominated_ranks(np.column_stack([-inside["accuracy"], inside[latency]]))
    return inside[ranks == 0].sort_values(latency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the tables' folder before")
    parser.add_argument("--after", type=Path, default=HERE.parent / "latency_tables")
    parser.add_argument("--run", type=Path, default=HERE.parent / "runs" / "snapdragon888-30ms")
    parser.add_argument("--device", default="snapdragon888")
    parser.add_argument("--budget-ms", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=HERE / "whole_models" / "family_change.json")
    args = parser.parse_args()
    trials = pd.read_csv(args.run / "trials.csv").dropna(subset=["accuracy"])
    archs = [Arch.from_dict(json.loads(a)) for a in trials["arch"]]
    for label, folder in (("before", args.before), ("after", args.after)):
        table = CostTable.load(folder / f"{args.device}.csv")
        trials[f"{label}_ms"] = [table.latency(a) for a in archs]
    committed = pd.read_csv(args.run / "pareto.csv")["arch_id"].tolist()
    fronts = {label: front(trials, f"{label}_ms", args.budget_ms) for label in ("before", "after")}
    columns = ["arch_id", "accuracy", "before_ms", "after_ms", "macs_g"]
    result = {
        "device": args.device,
        "budget_ms": args.budget_ms,
        "scored_trials": len(trials),
        "committed_family": committed,
        "within_budget": {k: int((trials[f"{k}_ms"] <= args.budget_ms).sum()) for k in ("before", "after")},
        "fronts": {k: f[columns].round(4).to_dict("records") for k, f in fronts.items()},
        "after_over_before_ms": {
            "median": round(float((trials["after_ms"] / trials["before_ms"]).median()), 4),
            "range": [
                round(float((trials["after_ms"] / trials["before_ms"]).min()), 4),
                round(float((trials["after_ms"] / trials["before_ms"]).max()), 4),
            ],
        },
    }
    for label, f in fronts.items():
        print(f"front {label} ({result['within_budget'][label]} of {len(trials)} scored trials within budget):")
        print(f[columns].to_string(index=False))
    print(f"after / before latency over the scored trials: {result['after_over_before_ms']}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
