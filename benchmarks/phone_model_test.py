"""The shipped phone models on reference blocks that no fit and no choice saw: the test figure.

Written for the per-class kernel model (issue 17; its results: phone_models/test.json) and run
again for the joint model the tables hold since issue 28 (whole_models/block_test.json).
The kernel model's form was chosen, and the shipped model against the transfer, on the 2,400-block
sample (600 per class, seed 0) of each phone's nn-Meter file; its figures there are development
figures. The other 9,716 blocks of each file were never used. This draws up to 600 of them per
class (seed 1), prices each with the shipped table's stored model, and reports within +-10% /
+-20% and MAPE with the standard error of the share, beside the trivial baseline: ms proportional
to MACs, one ratio per class (the median over the same sample the model was fitted on). Usage:

    python benchmarks/phone_model_test.py [--reference-dir ../shared/data/phone-luts] [--results FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lglsearch._files import atomic_write_json
from lglsearch.cost._metrics import error_summary
from lglsearch.cost._phone.derive import _sample_reference, load_model
from lglsearch.cost._phone.phone_kernels import reference_kernels
from lglsearch.cost._phone.reference import OP_CLASSES, load_reference, reference_class
from lglsearch.cost.table import CostTable, shipped_dir

HERE = Path(__file__).resolve().parent
FILES = {
    "snapdragon888": "xiaomi11-snapdragon888.json",
    "snapdragon855": "pixel4-snapdragon855.json",
    "tensor-g1": "pixel6-tensor-g1.json",
    "snapdragon821": "pixel1-snapdragon821.json",
}


def _macs(key: str) -> float:
    return sum(k.macs for k in reference_kernels(key))


def _pricer(model: Any) -> Any:
    """ms of a reference block: the kernel model prices it with its class's fit; the joint model
    prices it whole, with its one fit."""
    if model.name == "kernel":
        return model.predict
    return lambda _op_class, kernels: float(model.predict([kernels])[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, default=HERE.parent.parent / "shared" / "data" / "phone-luts")
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--results", type=Path, default=HERE / "phone_models" / "test.json")
    args = parser.parse_args()
    results = {}
    for device, file in FILES.items():
        reference = load_reference(args.reference_dir / file)
        table = CostTable.load(shipped_dir() / f"{device}.csv")
        model = load_model(table.phone_model())
        price = _pricer(model)
        fitted = set(_sample_reference(reference, 600, 0))  # the shipped tables' sample
        rest = {k: v for k, v in reference.items() if k not in fitted}
        test = _sample_reference(rest, args.per_class, 1)
        per_class = {}
        for c in OP_CLASSES:
            keys = [k for k in test if reference_class(k) == c]
            measured = np.array([reference[k] for k in keys])
            predicted = np.array([price(c, reference_kernels(k)) for k in keys])
            ratio = np.median([reference[k] / _macs(k) for k in fitted if reference_class(k) == c])
            baseline = np.array([ratio * _macs(k) for k in keys])
            row = {}
            for name, guess in (("model", predicted), ("macs_baseline", baseline)):
                s = error_summary(guess, measured)
                row[name] = {
                    "n": s["n"],
                    "within_10pct": round(s["within_10pct"], 4),
                    "within_10pct_se": round(math.sqrt(s["within_10pct"] * (1 - s["within_10pct"]) / s["n"]), 4),
                    "within_20pct": round(s["within_20pct"], 4),
                    "mape": round(s["mape"], 4),
                }
            per_class[c] = row
            k, b = row["model"], row["macs_baseline"]
            print(
                f"{device:<14} {c:<14} n={k['n']:<4} {model.name} {100 * k['within_10pct']:5.1f}% "
                f"(se {100 * k['within_10pct_se']:.1f})"
                f" / {100 * k['within_20pct']:5.1f}% / MAPE {100 * k['mape']:4.1f}%   MACs alone "
                f"{100 * b['within_10pct']:5.1f}% / {100 * b['within_20pct']:5.1f}% / MAPE {100 * b['mape']:4.1f}%",
                flush=True,
            )
        results[device] = per_class
    atomic_write_json(
        args.results,
        {
            "command": "python benchmarks/phone_model_test.py " + " ".join(sys.argv[1:]),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {
                device: CostTable.load(shipped_dir() / f"{device}.csv").phone_model()["name"] for device in FILES
            },
            "phones": results,
        },
    )


if __name__ == "__main__":
    main()
