"""What the phone tables price the presets and the committed 30 ms family at, and of which kernels.

For each phone table and each arch (the three presets, the members of runs/snapdragon888-30ms), the
table's latency and its split by kernel type: every op key of the arch is split into its parts'
kernels and each kernel priced as the table's phone model prices it (the per-class kernel model:
the part's class model, the all-class fit for a type the class never saw, one constant per part;
the joint model: one fit, one constant per network). Written to run in any checkout of the project
(only APIs older tables have are used), so the "before" figures come from the code that made them:

    git worktree add /tmp/before d82c099
    PYTHONPATH=/tmp/before python benchmarks/preset_breakdown.py --tables /tmp/before/latency_tables --out before.json
    python benchmarks/preset_breakdown.py --run /tmp/before/runs/snapdragon888-30ms \
        --out benchmarks/whole_models/breakdown_after.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

try:
    from lglsearch.cost._phone.phone_kernels import PhoneKernelModel, part_kernels
except ImportError:  # a checkout before the phone models moved into cost/_phone (issue 28)
    from lglsearch.cost.phone_kernels import PhoneKernelModel, part_kernels
from lglsearch.cost.ops import arch_ops, op_parts
from lglsearch.cost.table import CostTable
from lglsearch.space import PRESETS, Arch

HERE = Path(__file__).resolve().parent
DEVICES = ("snapdragon888", "snapdragon855", "tensor-g1", "snapdragon821")


def _family(run: Path) -> dict[str, Arch]:
    folder = run / "family"
    return {f"family/{p.stem}": Arch.from_dict(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))}


def _kernel_costs(model, kernels) -> np.ndarray:
    constant = model.coef[model.columns.index(("block", "constant"))]
    return model.predict([[k] for k in kernels]) - constant if kernels else np.zeros(0)


def breakdown(table: CostTable, arch: Arch) -> dict[str, float]:
    stored = table.phone_model()
    split: dict[str, float] = defaultdict(float)
    if stored["name"] == "kernel":
        model = PhoneKernelModel.from_dict(stored)
        for key in arch_ops(arch):
            for part, op_class in op_parts(key):
                kernels = part_kernels(part)
                own = model.classes[op_class]
                for kernel in kernels:
                    fit = own if kernel.type in own.seen else model.base
                    split[kernel.type] += float(_kernel_costs(fit, [kernel])[0])
                split["constant"] += float(own.coef[own.columns.index(("block", "constant"))])
    else:
        from lglsearch.cost._phone.joint import JointKernelModel

        model = JointKernelModel.from_dict(stored)
        kernels = [k for key in arch_ops(arch) for part, _ in op_parts(key) for k in part_kernels(part)]
        for kernel, cost in zip(kernels, model.kernel_costs(kernels), strict=True):
            split[kernel.type] += float(cost)
        split["constant"] += model.constant * model.factor
    return dict(sorted(split.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=HERE.parent / "latency_tables")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run", type=Path, default=HERE.parent / "runs" / "snapdragon888-30ms", help="its family")
    args = parser.parse_args()
    archs = dict(PRESETS) | _family(args.run)
    result: dict = {}
    for device in DEVICES:
        table = CostTable.load(args.tables / f"{device}.csv")
        result[device] = {"model": table.phone_model()["name"], "archs": {}}
        for name, arch in archs.items():
            split = breakdown(table, arch)
            latency = table.latency(arch)
            dense = sum(split.get(t, 0.0) for t in ("fc", "conv1x1")) / latency
            result[device]["archs"][name] = {
                "arch_id": arch.id,
                "latency_ms": round(latency, 4),
                "by_type_ms": {k: round(v, 4) for k, v in split.items()},
                "dense_share": round(dense, 4),
                "breakdown_sum_over_table": round(sum(split.values()) / latency, 6),
            }
            print(
                f"{device:14s} {name:22s} {latency:8.2f} ms  fc+conv1x1 {100 * dense:4.1f}%  "
                + ", ".join(f"{k} {v:.2f}" for k, v in list(split.items())[:5])
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
