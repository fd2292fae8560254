"""Latency-prediction throughput: archs priced per second by `CostTable.predict` in batch.

Samples N archs of the default space, then times `predict` on them twice: cold (empty stage
cache, as at the start of a search) and warm (every stage already priced), `--repeats` times
with a freshly loaded table each, and prints each time and the median: on a shared machine one
second-long timing moves by tens of percent. Uses the host table (built on first use), or a
shipped phone table with --device. Usage:

    python benchmarks/predict_throughput.py [--archs 200000] [--seed 0] [--repeats 1] [--device host]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lglsearch.cost.build import host_table
from lglsearch.cost.ops import space_ops
from lglsearch.cost.table import CostTable, table_path
from lglsearch.space import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="cold and warm timings, each on a fresh table")
    parser.add_argument("--device", default="host", help="the table to price with (default: host, built if need be)")
    args = parser.parse_args()
    space = load_space()
    if args.device == "host":
        host_table(space_ops(space), space_name=space.name)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    archs = [space.sample(rng) for _ in range(args.archs)]
    sampled = time.perf_counter() - start
    print(f"sampled {len(archs):,} archs ({len(set(archs)):,} distinct) in {sampled:.1f} s")
    rates: dict[str, list[float]] = {"cold": [], "warm": []}
    for _ in range(args.repeats):
        table = CostTable.load(table_path(args.device))  # a fresh table: empty stage cache
        for label, got in rates.items():
            start = time.perf_counter()
            latency = table.predict(archs)["latency_ms"].to_numpy()
            seconds = time.perf_counter() - start
            got.append(len(archs) / seconds)
            print(
                f"predict {label}: {got[-1]:,.0f} archs/s ({seconds:.2f} s for {len(archs):,}; "
                f"latency {latency.min():.2f}-{latency.max():.2f} ms)"
            )
    if args.repeats > 1:
        for label, got in rates.items():
            spread = f"range {min(got):,.0f}-{max(got):,.0f}"
            print(f"median {label}: {np.median(got):,.0f} archs/s over {len(got)} ({spread})")


if __name__ == "__main__":
    main()
