"""onnxruntime latency of the three EdgeViT presets on this machine.

Batch 1, 224x224, fp32, CPUExecutionProvider, 1 and 2 intra-op threads. Each (preset, threads)
pair is warmed up, then timed in rounds that interleave the pairs (so that drift of a shared
machine hits every pair alike); the median and the 10th/90th percentiles of all timed runs are
reported. Usage:

    python benchmarks/preset_latency.py [--runs 60] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

from lglsearch._files import atomic_write_json
from lglsearch.cost.build import cpu_name
from lglsearch.counting import count
from lglsearch.export import export_arch, ort_session
from lglsearch.space import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60, help="timed runs per pair in all (>= 30)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the runs are split into")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    sessions, times = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch in PRESETS.items():
            path = export_arch(arch, Path(tmp) / f"{name}.onnx").path
            for t in threads:
                session = ort_session(path, threads=t)
                for _ in range(args.warmup):
                    session.run(None, {"input": x})
                sessions[(name, t)], times[(name, t)] = session, []
        per_round = -(-args.runs // args.rounds)
        for r in range(args.rounds):
            for key, session in sessions.items():
                for _ in range(per_round):
                    start = time.perf_counter()
                    session.run(None, {"input": x})
                    times[key].append((time.perf_counter() - start) * 1e3)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = []
    for (name, t), ms in times.items():
        ms = np.asarray(ms)
        c = count(PRESETS[name])
        rows.append(
            {
                "preset": name,
                "threads": t,
                "runs": len(ms),
                "median_ms": float(np.median(ms)),
                "p10_ms": float(np.percentile(ms, 10)),
                "p90_ms": float(np.percentile(ms, 90)),
                "params_m": c.params_m,
                "macs_g": c.macs_g,
            }
        )
    print(f"\nonnxruntime {onnxruntime.__version__}, {cpu_name()}, batch 1, 224x224, fp32, opset 17\n")
    print("| preset | threads | runs | median ms | p10 ms | p90 ms | params M | GMACs |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["threads"], r["macs_g"])):
        print(
            f"| {r['preset']} | {r['threads']} | {r['runs']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | "
            f"{r['p90_ms']:.2f} | {r['params_m']:.2f} | {r['macs_g']:.3f} |"
        )
    if args.json:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
